from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from onaccess_lib import Harness  # noqa: E402


@pytest.fixture
def harness() -> Iterator[Harness]:
    if os.geteuid() != 0:
        pytest.skip("fanotify permission events need root")
    h = Harness()
    try:
        yield h
    finally:
        h.close()
