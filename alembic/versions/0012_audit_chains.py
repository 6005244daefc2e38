"""Several audit chains: ``audit_events.chain`` and ``chain_seq``.

Every audit writer used to lock the one chain head, so all writes in the cluster queued behind
each other. Events now belong to one of several chains (one head row per chain in
``audit_head``, ``id`` = chain number); a writer takes whichever chain is free. ``chain_seq`` is
an event's gap-free position in its chain and what its link covers; ``seq`` becomes a plain
row number from the database (unique, increasing, not part of any link).

Existing events all belong to chain 1 at the position they had (``chain_seq = seq``), so their
links verify unchanged. On PostgreSQL the ``seq`` sequence moves past the rows written with
explicit numbers.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("chain_seq", sa.Integer(), nullable=True))
    op.execute("UPDATE audit_events SET chain_seq = seq")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("chain_seq", existing_type=sa.Integer(), nullable=False)
        batch_op.create_index("ix_audit_events_chain_position", ["chain", "chain_seq"], unique=True)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "SELECT setval(pg_get_serial_sequence('audit_events', 'seq'), "
            "COALESCE((SELECT max(seq) FROM audit_events), 0) + 1, false)"
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_chain_position")
        batch_op.drop_column("chain_seq")
        batch_op.drop_column("chain")
