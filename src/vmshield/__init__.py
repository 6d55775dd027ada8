"""vmshield: one Security VM per hypervisor host scans files and traffic for every guest."""

from vmshield import native as _native

__version__ = "0.1.0"

_native.extend(__path__, __name__)  # compiled modules first (vmshield/event_stamps.py)
