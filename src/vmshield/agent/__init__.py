"""vmshield.agent (see docs.architecture.md)."""
