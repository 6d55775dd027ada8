"""Alembic environment: the URL comes from the config the center builds (db.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from vmshield.center.db import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url
    connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            # Replicas starting together against one PostgreSQL: one migrates, the others wait.
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4242001)")
            context.run_migrations()


run_migrations_online()
