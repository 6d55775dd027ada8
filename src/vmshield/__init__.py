"""vmshield: one Security VM per hypervisor host scans files and traffic for every guest."""

__version__ = "0.1.0"
