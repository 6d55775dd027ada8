"""The center's state without the web framework: data directory, keys, migrated database.

Kept apart from the FastAPI app so that `vmshield center user add` and `token create` start fast.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from vmshield.center import db
from vmshield.center.metrics import Metrics
from vmshield.center.pki import CenterPKI
from vmshield.center.store import Store


@dataclass
class CenterContext:
    data_dir: Path
    db_url: str
    store: Store
    pki: CenterPKI
    metrics: Metrics
    stop: threading.Event = field(default_factory=threading.Event)


def default_db_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'center.db').resolve()}"


def open_center(data_dir: Path, db_url: str | None = None) -> CenterContext:
    """Data directory, keys, migrations: everything but the HTTP server."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    pki = CenterPKI(data_dir)
    pki.ensure()
    url = db_url or default_db_url(data_dir)
    db.migrate(url)
    store = Store(db.make_engine(url), pki)
    store.init()
    return CenterContext(data_dir, url, store, pki, Metrics(store))
