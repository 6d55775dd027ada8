"""Fixtures: a center (data dir + database) on SQLite and on the local PostgreSQL, its app in a
TestClient, and tokens for each role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from vmshield.center import auth
from vmshield.center.app import CenterContext, create_app, open_center
from vmshield.center.testing import database


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def center(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CenterContext]:
    with database(request.param, tmp_path) as url:
        c = open_center(tmp_path / "data", url)
        try:
            yield c
        finally:
            c.store.engine.dispose()


@pytest.fixture
def client(center: CenterContext) -> Iterator[TestClient]:
    with TestClient(create_app(center), base_url="https://testserver") as tc:
        yield tc


def make_token(center: CenterContext, role: str) -> str:
    with center.store.sessions.begin() as s:
        token, _ = auth.create_token(s, role, "test", name=role)
    return token


@pytest.fixture
def tokens(center: CenterContext) -> dict[str, dict[str, Any]]:
    return {
        r: {"Authorization": f"Bearer {make_token(center, r)}"}
        for r in ("viewer", "operator", "administrator")
    }
