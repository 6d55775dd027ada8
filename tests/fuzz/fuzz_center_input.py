"""Fuzz what crosses the center's trust boundary without a database: an SVM's event (checked
and turned into a row), submitted profile/policy settings, and the CEF/syslog rendering of any
stored event. Any input gives a result or a ValueError, never another exception."""

from __future__ import annotations

import msgspec
from pydantic import ValidationError

from tests.fuzz._harness import main
from vmshield.center.export import cef, syslog_5424
from vmshield.center.profiles import parse_settings
from vmshield.center.store import event_row


def TestOneInput(data: bytes) -> None:
    try:
        obj = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):  # the API answers both with 422
        return
    try:
        row = event_row(obj, None, 1.0)
    except (ValueError, TypeError, OverflowError, msgspec.EncodeError):
        row = None
    if row is not None:
        assert isinstance(row[0], str) and 0 < len(row[0]) <= 64
        assert 1 <= row[6] <= 4
        ev = msgspec.json.decode(row[9])
        line = cef(ev)
        assert line.startswith("CEF:0|vmshield|") and "\n" not in line
        syslog_5424(ev, line, "h")
    if isinstance(obj, dict):
        for kind in ("file", "network"):
            try:
                parse_settings(kind, obj)
            except (ValueError, ValidationError):
                pass


if __name__ == "__main__":
    main(TestOneInput)
