"""Interoperability with the TypeScript adapters, read from the Node fixtures beside the clone."""
