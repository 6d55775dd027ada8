"""Loaders for the signature formats users already have: ClamAV databases and YARA rules."""
