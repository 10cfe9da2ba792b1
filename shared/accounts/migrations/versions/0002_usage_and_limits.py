"""usage records, and per-key concurrency and quota limits."""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as t:
        t.add_column(sa.Column("max_concurrent", sa.Integer, nullable=True))
        t.add_column(sa.Column("quota_images", sa.Integer, nullable=True))
        t.add_column(sa.Column("quota_gpu_seconds", sa.Float, nullable=True))
        t.add_column(sa.Column("quota_period", sa.String(8), nullable=False,
                               server_default="month"))
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), nullable=False, unique=True),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("shape", sa.String(16), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("steps", sa.Integer, nullable=False),
        sa.Column("pixels", sa.BigInteger, nullable=False),
        sa.Column("pixel_steps", sa.BigInteger, nullable=False),
        sa.Column("gpu_seconds", sa.Float, nullable=False),
        sa.Column("duration_seconds", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(40), nullable=False),
        sa.Column("error", sa.String(400), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_usage_key_id", "usage", ["key_id"])
    op.create_index("ix_usage_status", "usage", ["status"])
    op.create_index("ix_usage_started_at", "usage", ["started_at"])


def downgrade() -> None:
    op.drop_table("usage")
    with op.batch_alter_table("api_keys") as t:
        for name in ("quota_period", "quota_gpu_seconds", "quota_images", "max_concurrent"):
            t.drop_column(name)
