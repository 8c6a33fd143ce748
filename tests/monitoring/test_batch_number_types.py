"""The PostgreSQL batch insert binds one array per column, and psycopg refuses to dump a list mixing int and
float (`cannot dump lists of mixed types`): `telecare demo` failed on PostgreSQL because its synthetic
readings mix rounded integers (blood pressure, SpO2) with decimals (weight). The end-to-end proof is
tests/test_cli.py's demo test on PostgreSQL; this pins the cast itself."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.adapt import PyFormat, Transformer

from telecare.monitoring.ingest import _PG_TYPES, _columns


def _row(value: float, value2: float | None) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(_PG_TYPES)
    row.update(value=value, value2=value2, orig_value=value, orig_value2=value2, org_id=1)
    return row


def test_float_columns_are_cast_so_psycopg_can_dump_a_mixed_batch() -> None:
    raw = [_row(132, 84), _row(88.4, None), _row(97, None)]
    columns = _columns(raw)
    assert columns["value"] == [132.0, 88.4, 97.0]
    assert columns["value2"] == [84.0, None, None]
    assert {type(v) for v in columns["value"]} == {float}
    assert columns["org_id"] == [1, 1, 1]
    dumper = Transformer().get_dumper(columns["value"], PyFormat.BINARY)
    assert dumper.dump(columns["value"])  # the uncast list raises DataError here
    with pytest.raises(psycopg.DataError, match="mixed types"):
        Transformer().get_dumper([v["value"] for v in raw], PyFormat.BINARY)
