"""A real center serving HTTPS (uvicorn, TLS, optional client certificates) on 127.0.0.1 with an
ephemeral port, on SQLite and on the local PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vmshield.center import auth
from vmshield.center.testing import RunningCenter, database, running_center


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def live(tmp_path: Path, db_url: str | None) -> Iterator[RunningCenter]:
    with running_center(tmp_path / "center", db_url) as rc:
        yield rc


@pytest.fixture
def admin(live: RunningCenter) -> dict[str, str]:
    """Headers with an administrator's API token for the live center."""
    with live.ctx.store.sessions.begin() as s:
        token, _ = auth.create_token(s, "administrator", "test", "admin")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin_factory():  # noqa: ANN201
    """For tests that start their own center: make an administrator token for it."""

    def make(rc: RunningCenter) -> dict[str, str]:
        with rc.ctx.store.sessions.begin() as s:
            token, _ = auth.create_token(s, "administrator", "test", "admin")
        return {"Authorization": f"Bearer {token}"}

    return make
