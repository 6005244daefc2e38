"""Seal the coming-of-age date; seed the audit chain head.

In plaintext, ``identities.adult_on`` (birth date + 18 years) gives back digits 7-14 of the ID
number, exactly what the mask hides: together they rebuilt the whole number. The date is now
stored sealed (AES-256-GCM, bound to the identity id). The audit chain's head row is created
here so the first concurrent writers lock it instead of racing to insert it.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa

from alembic import context, op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _master_key() -> bytes:
    from app.settings import Settings

    settings = context.config.attributes.get("settings")
    return (settings if isinstance(settings, Settings) else Settings()).master_key


def upgrade() -> None:
    from app.services.tokens import seal_adult_on

    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("adult_on_sealed", sa.Text(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, adult_on FROM identities")).all()
    if rows:
        key = _master_key()
        for identity_id, adult_on in rows:
            value = adult_on if isinstance(adult_on, date) else date.fromisoformat(str(adult_on))
            bind.execute(
                sa.text("UPDATE identities SET adult_on_sealed = :s WHERE id = :i"),
                {"s": seal_adult_on(key, identity_id, value), "i": identity_id},
            )
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.alter_column("adult_on_sealed", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("adult_on")
    bind.execute(
        sa.text(
            "INSERT INTO audit_head (id, seq, hash) SELECT 1, 0, :genesis "
            "WHERE NOT EXISTS (SELECT 1 FROM audit_head WHERE id = 1)"
        ),
        {"genesis": "0" * 64},
    )


def downgrade() -> None:
    raise NotImplementedError("the coming-of-age date is not put back in plaintext")
