"""--action for `vmshield scan`: disinfect, quarantine or delete an infected file.

Placeholder until the disinfection/quarantine part lands: see `apply`.
"""

from __future__ import annotations

from vmshield.engines.file.results import ScanResult


def apply(action: str, result: ScanResult, quarantine_dir: str) -> str:
    return f"action {action} not available yet (file left in place)"
