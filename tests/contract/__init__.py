"""Contract tests: the same assertions on every backend, through the ``store`` and
``peewee_store`` fixtures (InMemoryStateStore, SQLite, MySQL/MariaDB, PostgreSQL);
``store`` here also runs AsyncPeeweeStateStore on each database (see ``conftest``)."""
