"""vmshield.integration (see docs.architecture.md)."""
