"""Examples for the batchactions-peewee command line (see README.md, "Command line")."""
