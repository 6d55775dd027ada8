"""vmshield.center (see docs.architecture.md)."""
