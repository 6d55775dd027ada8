"""vmshield.transport (see docs.architecture.md)."""
