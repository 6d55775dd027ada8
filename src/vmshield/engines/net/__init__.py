"""Network threat detection engine: sans-IO packet pipeline."""
