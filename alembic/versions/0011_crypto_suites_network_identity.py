"""Crypto suites and network identities.

Say which suite (intl or gm) made each blind index and code HMAC, and what an identity's index
is of (a resident ID number or a network identity's app-scoped identifier).

Existing rows were all made by the ``intl`` suite (HMAC-SHA-256). Sealed values carry their
suite in their own format (``sm4-gcm.`` prefix for ``gm``), so they need no column.

Revision ID: 0011
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bidx_suite", sa.String(length=8), nullable=False, server_default="intl")
        )
        batch_op.add_column(
            sa.Column(
                "id_type", sa.String(length=32), nullable=False, server_default="cn_resident_id"
            )
        )
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bidx_suite", sa.String(length=8), nullable=True))
    op.execute("UPDATE verifications SET bidx_suite = 'intl' WHERE bidx_version IS NOT NULL")
    with op.batch_alter_table("sms_codes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("suite", sa.String(length=8), nullable=False, server_default="intl")
        )


def downgrade() -> None:
    with op.batch_alter_table("sms_codes", schema=None) as batch_op:
        batch_op.drop_column("suite")
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_column("bidx_suite")
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.drop_column("id_type")
        batch_op.drop_column("bidx_suite")
