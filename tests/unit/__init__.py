"""Unit tests: pure code (models, sources, rendered statements), no database server."""
