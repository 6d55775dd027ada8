"""network policies: URL categories of the one vocabulary (the URL database's), applied by SVMs

Until now the SVMs did not apply `url_block`/`url_allow` (every URL database hit was blocked), and
the center's categories were not the database's. Each network policy keeps what it did: every
threat category it does not allow is blocked; "unknown" (never applied) goes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:15:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copies (a migration must not change with the code): urls.db THREAT_CATEGORIES at this
# revision, and the center's URL categories before it.
_THREATS = ("malicious", "phishing", "adware", "malware", "unwanted", "riskware", "suspicious")
_OLD = ("malicious", "phishing", "adware", "gambling", "adult", "social", "unknown")
_profiles = sa.table(
    "profiles",
    sa.column("id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("settings", sa.JSON),
)


def _rewrite(fix: Any) -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_profiles.c.id, _profiles.c.settings).where(_profiles.c.kind == "network")
    ).all()
    for pid, settings in rows:
        new = fix(dict(settings or {}))
        if new != settings:
            conn.execute(_profiles.update().where(_profiles.c.id == pid).values(settings=new))


def _upgrade_settings(s: dict[str, Any]) -> dict[str, Any]:
    allow = [c for c in s.get("url_allow", []) if c != "unknown"]
    block = [c for c in s.get("url_block", ["malicious", "phishing"]) if c != "unknown"]
    block += [c for c in _THREATS if c not in block and c not in allow]
    return {**s, "url_block": block, "url_allow": allow}


def _downgrade_settings(s: dict[str, Any]) -> dict[str, Any]:
    return {
        **s,
        "url_block": [c for c in s.get("url_block", []) if c in _OLD],
        "url_allow": [c for c in s.get("url_allow", []) if c in _OLD],
    }


def upgrade() -> None:
    _rewrite(_upgrade_settings)


def downgrade() -> None:
    _rewrite(_downgrade_settings)
