"""Numbered playhouse.migrations scripts for the store's tables (applied by ``migrate``).

Each ``NNNN_name.py`` defines ``up(migrator, db)`` and reads the table prefix with
``batchactions_peewee.store.schema.table_prefix()``. A script describes the schema as it was when
it was written: change the tables in ``store/tables.py`` *and* add the next numbered script, and
``tests/integration/test_migrations.py`` checks that the two still agree on every backend.
"""
