"""vmshield.lab (see docs.architecture.md)."""
