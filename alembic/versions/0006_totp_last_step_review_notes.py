"""Remember each admin's last accepted TOTP step; keep reviewers' notes sealed per verification.

A one-time code is good once (RFC 6238 §5.2): ``admins.totp_last_step`` holds the time step of
the last code accepted. Reviewers' free-text notes leave the audit trail (which keeps only a
reason code) for ``verifications.review_notes_sealed``, which erasure wipes.

Revision ID: 0006
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("admins", schema=None) as batch_op:
        batch_op.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review_notes_sealed", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_column("review_notes_sealed")
    with op.batch_alter_table("admins", schema=None) as batch_op:
        batch_op.drop_column("totp_last_step")
