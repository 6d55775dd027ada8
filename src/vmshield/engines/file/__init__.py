"""File anti-virus engine: pure library (no sockets, no database)."""
