"""vmshield.engines (see docs.architecture.md)."""
