"""vmshield.introspection (see docs.architecture.md)."""
