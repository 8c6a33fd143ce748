"""Logging set-up: no health data in log lines.

Two library loggers would otherwise write it: uvicorn's access log prints each request's query string
(`/api/v1/patients?name=...&mrn=...`), and the database drivers log every statement with its parameters at
DEBUG (SQLAlchemy at INFO when echoing). The access log keeps the path and drops the query; the driver
loggers stay at WARNING whatever TELECARE_LOG_LEVEL says."""

from __future__ import annotations

import logging

from telecare.config import Settings

QUIET_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "psycopg")


class DropQueryString(logging.Filter):
    """uvicorn.access records carry (client, method, path with query, http version, status) as args."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[query omitted]", *args[3:])
        return True


_FILTER = DropQueryString()


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    if _FILTER not in access.filters:
        access.addFilter(_FILTER)
