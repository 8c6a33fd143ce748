"""audit seals: entries are written unchained and sealed into the HMAC chain by one sealer (docs/audit.md)

Revision ID: 0004_audit_seals
Revises: 0001_foundation
Create Date: 2026-12-02 16:30:00.000000

Every entry already in the table is queued for sealing (in id order); the head is reset to the genesis of the
seal chain, so run `telecare audit seal` (or start the server) after upgrading, before `telecare audit
verify`. Anchors printed before this revision named entries; from here on they name seals.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import telecare.core.db

revision: str = "0004_audit_seals"
down_revision: str | Sequence[str] | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64

SQLITE_TRIGGERS = [
    """CREATE TRIGGER audit_seals_no_update BEFORE UPDATE ON audit_seals
       BEGIN SELECT RAISE(ABORT, 'audit seals are append-only'); END""",
    """CREATE TRIGGER audit_seals_no_delete BEFORE DELETE ON audit_seals
       BEGIN SELECT RAISE(ABORT, 'audit seals are append-only'); END""",
]
POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION telecare_audit_seals_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'audit seals are append-only'; END; $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_seals_no_update BEFORE UPDATE OR DELETE ON audit_seals
       FOR EACH ROW EXECUTE FUNCTION telecare_audit_seals_append_only()""",
    """CREATE TRIGGER audit_seals_no_truncate BEFORE TRUNCATE ON audit_seals
       FOR EACH STATEMENT EXECUTE FUNCTION telecare_audit_seals_append_only()""",
]


def upgrade() -> None:
    op.create_table(
        "audit_pending",
        sa.Column("entry_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_audit_pending")),
    )
    op.create_table(
        "audit_seals",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("sealed_at", telecare.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("prev_mac", sa.String(length=64), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_seals")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_audit_seals_entry_id")),
    )
    with op.batch_alter_table("audit_chain_head", schema=None) as batch_op:
        batch_op.alter_column("last_entry_id", new_column_name="last_seq")
    op.execute(sa.text("UPDATE audit_chain_head SET last_seq = 0, last_mac = :g").bindparams(g=GENESIS))
    op.execute("INSERT INTO audit_pending (entry_id) SELECT id FROM audit_entries")
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("CREATE SEQUENCE audit_entries_id_seq OWNED BY audit_entries.id")
        op.execute(
            "SELECT setval('audit_entries_id_seq', COALESCE((SELECT MAX(id) FROM audit_entries), 0) + 1, false)"
        )
    for statement in POSTGRES_TRIGGERS if dialect == "postgresql" else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_seals_no_update ON audit_seals")
        op.execute("DROP TRIGGER IF EXISTS audit_seals_no_truncate ON audit_seals")
        op.execute("DROP FUNCTION IF EXISTS telecare_audit_seals_append_only()")
        op.execute("DROP SEQUENCE IF EXISTS audit_entries_id_seq")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_seals_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_seals_no_delete")
    # Entries written unchained since the upgrade cannot be chained the old way without the key: the head is
    # left at the genesis and `telecare audit verify` of the old code reports them (restore from backup).
    with op.batch_alter_table("audit_chain_head", schema=None) as batch_op:
        batch_op.alter_column("last_seq", new_column_name="last_entry_id")
    op.drop_table("audit_seals")
    op.drop_table("audit_pending")
