"""The command line, run in subprocesses as a user runs it."""
