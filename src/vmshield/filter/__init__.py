"""vmshield.filter (see docs.architecture.md)."""
