"""Bridges to other tools: optional, each behind its own extra."""
