"""vmshield.svm (see docs.architecture.md)."""
