"""Examples for the batchactions-peewee command line (see docs/cli.md)."""
