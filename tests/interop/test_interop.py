"""Interoperability with the TypeScript adapters (@batchactions/state-sequelize, state-prisma).

Reading: our store, pointed at the tables TypeScript's SequelizeStateStore wrote (the Node
fixtures beside the repository, see tests/support/interop.py), returns what Node's own store read
back from them (node-readback.json), compared as our pydantic models. The same rows stored in
the other shapes the TypeScript adapters leave behind read the same.

Schema: ``create_tables()`` leaves tables the TypeScript adapters created exactly as they are.

Writing: our rows hold what the TypeScript adapters read (compact JSON text, epoch-ms
integers, 0/1 on SQLite and MySQL). Golden tests pin the stored values on every backend.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from batchactions_peewee import (
    Batch,
    BatchState,
    BatchStatus,
    JobConfig,
    JobState,
    JobStatus,
    PeeweeStateStore,
    ProcessedRecord,
    RecordStatus,
    ValidationError,
)

from ..support.backends import ENV, fresh_server_database, open_database, server_url
from ..support.interop import (
    FLAVOURS,
    NODE_PREFIX,
    TABLES,
    Flavour,
    NodeReadback,
    clock_of,
    copy_sqlite_fixture,
    create_node_tables,
    declared_types,
    execute,
    fixtures_dir,
    insert_node_rows,
    node_readback,
    quote,
    replay_mariadb_dump,
    sqlite_rows,
    sqlite_storage_classes,
    stored_shape,
    typed,
)
from ..support.stores import make_store, new_prefix

JOB_A, JOB_B = "node-job-A", "node-job-B"
Clock = Callable[[], int]
StoreFactory = Callable[[Clock | None], PeeweeStateStore]


def without_live_fields(job: JobState) -> JobState:
    """``job`` without the worker and claim time, which Node's JSON batch list never holds."""
    batches = [b.model_copy(update={"worker_id": None, "claimed_at": None}) for b in job.batches]
    return job.model_copy(update={"batches": batches})


def job_state(store: PeeweeStateStore, job_id: str) -> JobState:
    job = store.get_job_state(job_id)
    assert job is not None, f"{job_id} not found"
    return job


# -- the Node fixture databases -----------------------------------------------------------------


@dataclass
class NodeDatabase:
    """A database holding what SequelizeStateStore wrote, and what Node read back from it."""

    side: str  # "sqlite" or "mariadb": its key in node-readback.json
    database: pw.Database
    expected: NodeReadback

    @property
    def backend(self) -> str:
        return "mysql" if self.side == "mariadb" else "sqlite"

    def store(self, clock: Clock | None = None) -> PeeweeStateStore:
        return PeeweeStateStore(self.database, table_prefix=NODE_PREFIX, clock=clock)

    def live_batches(self) -> list[tuple[Any, ...]]:
        """(id, workerId, claimedAt) of job A's batches, straight from the batches table."""

        def q(name: str) -> str:
            return quote(self.backend, name)

        return execute(
            self.database,
            f"SELECT {q('id')}, {q('workerId')}, {q('claimedAt')} "
            f"FROM {q(NODE_PREFIX + 'batches')} WHERE {q('jobId')} = '{JOB_A}' "
            f"ORDER BY {q('batchIndex')}",
        )


@contextmanager
def mariadb_node_database() -> Iterator[pw.Database]:
    """A fresh MariaDB database with node-sequelize-mariadb.sql replayed in it; dropped after."""
    fixtures_dir()
    if server_url("mysql") is None:
        pytest.skip(f"mariadb: set {ENV['mysql']} to replay the Node MariaDB dump")
    with fresh_server_database("mysql") as url:
        database = open_database(url)
        try:
            replay_mariadb_dump(database)
            yield database
        finally:
            database.close()


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def node_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeDatabase]:
    """Each database Node's SequelizeStateStore wrote (read only by the tests that use it)."""
    side: str = request.param
    if side == "sqlite":
        copy = copy_sqlite_fixture(tmp_path_factory.mktemp("node-sqlite"))
        database: pw.Database = pw.SqliteDatabase(str(copy))
        try:
            yield NodeDatabase(side, database, node_readback(side))
        finally:
            database.close()
    else:
        with mariadb_node_database() as database:
            yield NodeDatabase(side, database, node_readback(side))


# -- reading what Node wrote --------------------------------------------------------------------


def test_get_job_state_matches_node_apart_from_worker_and_claim_time(node_db: NodeDatabase) -> None:
    ours = job_state(node_db.store(), JOB_A)
    assert without_live_fields(ours) == node_db.expected.job_a
    assert ours.distributed and ours.config.schema_ is not None


def test_get_job_state_reads_batches_from_the_table_where_node_reads_the_json_list(
    node_db: NodeDatabase,
) -> None:
    """Node's getJobState returns the job row's JSON batch list, which has no worker or claim
    time; ours reads a distributed job's batches from the batches table, so it has both.
    Status and counts agree here because Node kept its JSON list in step."""
    ours = job_state(node_db.store(), JOB_A)
    assert [(b.id, b.worker_id, b.claimed_at) for b in ours.batches] == node_db.live_batches()
    assert [b.worker_id for b in ours.batches] == ["node-worker-1", "node-worker-2", None]
    assert all(isinstance(b.claimed_at, int) for b in ours.batches[:2])
    assert all(b.worker_id is None and b.claimed_at is None for b in node_db.expected.job_a.batches)


def test_get_batch_records_matches_node_for_every_batch(node_db: NodeDatabase) -> None:
    store = node_db.store()
    expected = node_db.expected.batch_records_a
    ours = {batch_id: store.get_batch_records(JOB_A, batch_id) for batch_id in expected}
    assert ours == expected
    assert ours["node-A-b1"][1].raw["note"] == "Zoë 😀 中文"


def test_get_failed_records_matches_node(node_db: NodeDatabase) -> None:
    failed = node_db.store().get_failed_records(JOB_A)
    assert failed == node_db.expected.failed_a
    assert [(r.index, r.status) for r in failed] == [(1, "invalid"), (2, "failed")]


def test_get_pending_records_are_nodes_pending_batch_records(node_db: NodeDatabase) -> None:
    expected = node_db.expected.batch_records_a
    pending = expected["node-A-b1"] + expected["node-A-b2"]
    assert all(r.status == RecordStatus.PENDING for r in pending)
    assert node_db.store().get_pending_records(JOB_A) == pending


def test_get_progress_matches_node_on_a_clock_stopped_at_nodes_read_time(
    node_db: NodeDatabase,
) -> None:
    expected = node_db.expected
    store = node_db.store(clock=clock_of(expected.job_a, expected.progress_a))
    assert store.get_progress(JOB_A) == expected.progress_a


def test_get_distributed_status_matches_node(node_db: NodeDatabase) -> None:
    assert node_db.store().get_distributed_status(JOB_A) == node_db.expected.distributed_a


def test_job_b_state_processed_records_and_progress_match_node(node_db: NodeDatabase) -> None:
    expected = node_db.expected
    store = node_db.store(clock=clock_of(expected.job_b, expected.progress_b))
    assert job_state(store, JOB_B) == expected.job_b
    assert store.get_processed_records(JOB_B) == expected.processed_b
    assert store.get_progress(JOB_B) == expected.progress_b


# -- the same rows in every shape the TypeScript adapters write ---------------------------------


def assert_reads_like_node(make: StoreFactory, expected: NodeReadback) -> None:
    """Every read method returns what Node read back from the scenario."""
    store = make(None)
    assert without_live_fields(job_state(store, JOB_A)) == expected.job_a
    assert {b: store.get_batch_records(JOB_A, b) for b in expected.batch_records_a} == (
        expected.batch_records_a
    )
    assert store.get_failed_records(JOB_A) == expected.failed_a
    assert store.get_distributed_status(JOB_A) == expected.distributed_a
    assert make(clock_of(expected.job_a, expected.progress_a)).get_progress(JOB_A) == (
        expected.progress_a
    )
    assert job_state(store, JOB_B) == expected.job_b
    assert store.get_processed_records(JOB_B) == expected.processed_b
    assert make(clock_of(expected.job_b, expected.progress_b)).get_progress(JOB_B) == (
        expected.progress_b
    )


@contextmanager
def flavour_database(
    flavour: Flavour, url_for: Callable[[str], str], tmp_path: Path
) -> Iterator[tuple[pw.Database, str]]:
    """An empty database for ``flavour`` and a table prefix nobody else uses."""
    fixtures_dir()
    if flavour.backend == "sqlite":
        database: pw.Database = pw.SqliteDatabase(str(tmp_path / "flavour.db"))
    else:
        database = open_database(url_for(flavour.backend))
    try:
        yield database, new_prefix()
    finally:
        database.close()


def _flavour_param(name: str) -> Any:
    return pytest.param(FLAVOURS[name], id=name)


@pytest.mark.parametrize("flavour", [_flavour_param(name) for name in FLAVOURS])
def test_store_reads_the_scenario_in_every_shape_the_ts_adapters_store_it(
    flavour: Flavour, url_for: Callable[[str], str], tmp_path: Path
) -> None:
    """JSON as text, as UTF-8 bytes, as native json/jsonb, or as the JSON strings Prisma makes
    of the adapter's JSON.stringify output; booleans as 0/1 or true/false; BIGINTs reaching
    Python as int, numeric text or Decimal."""
    with flavour_database(flavour, url_for, tmp_path) as (database, prefix):
        create_node_tables(database, flavour, prefix)
        insert_node_rows(database, flavour, prefix)
        assert stored_shape(database, flavour, prefix, JOB_A) == flavour.stored_as

        def make(clock: Clock | None) -> PeeweeStateStore:
            return PeeweeStateStore(database, table_prefix=prefix, clock=clock)

        assert_reads_like_node(make, node_readback("sqlite"))
        live = [(b.worker_id, b.claimed_at) for b in job_state(make(None), JOB_A).batches]
        assert live == [(row["workerId"], row["claimedAt"]) for row in sqlite_rows("batches")]


# -- create_tables() on tables the TypeScript adapters created ----------------------------------


def sqlite_schema(database: pw.Database) -> list[tuple[Any, ...]]:
    return execute(database, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")


def test_create_tables_leaves_sequelizes_sqlite_tables_unchanged(tmp_path: Path) -> None:
    path = copy_sqlite_fixture(tmp_path)
    database = pw.SqliteDatabase(str(path))
    before = sqlite_schema(database)
    assert {name for _, name, _, _ in before} >= {NODE_PREFIX + t for t in TABLES}
    content = hashlib.sha256(path.read_bytes()).hexdigest()

    store = PeeweeStateStore(database)
    store.create_tables()
    store.create_tables()

    assert sqlite_schema(database) == before
    database.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == content
    assert job_state(PeeweeStateStore(pw.SqliteDatabase(str(path))), JOB_A).total_records == 9


def test_create_tables_leaves_sequelizes_mariadb_tables_unchanged() -> None:
    with mariadb_node_database() as database:

        def show_create() -> list[str]:
            return [
                execute(database, f"SHOW CREATE TABLE `{NODE_PREFIX}{t}`")[0][1] for t in TABLES
            ]

        before = show_create()
        assert "utf8mb4_bin NOT NULL CHECK (json_valid(`config`))" in before[0]
        store = PeeweeStateStore(database)
        store.create_tables()
        store.create_tables()
        assert show_create() == before
        assert job_state(store, JOB_A).total_records == 9


def postgres_schema(
    database: pw.Database, prefix: str
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(columns, indexes) of the three tables, from PostgreSQL's catalog."""
    tables = [prefix + t for t in TABLES]
    columns = execute(
        database,
        "SELECT table_name, ordinal_position, column_name, data_type, column_default, "
        "is_nullable FROM information_schema.columns WHERE table_name = ANY(%s) "
        "ORDER BY table_name, ordinal_position",
        [tables],
    )
    indexes = execute(
        database,
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) "
        "ORDER BY indexname",
        [tables],
    )
    return columns, indexes


def test_create_tables_leaves_prismas_postgres_tables_unchanged(
    url_for: Callable[[str], str], tmp_path: Path
) -> None:
    flavour = FLAVOURS["postgres-prisma-jsonb-strings"]
    with flavour_database(flavour, url_for, tmp_path) as (database, prefix):
        create_node_tables(database, flavour, prefix)
        before = postgres_schema(database, prefix)
        columns, indexes = before
        assert (prefix + "jobs", 3, "config", "jsonb", None, "NO") in columns
        assert len(indexes) == 3 + 5  # three primary keys, five Prisma indexes
        store = PeeweeStateStore(database, table_prefix=prefix)
        store.create_tables()
        store.create_tables()
        assert postgres_schema(database, prefix) == before


# -- what we write is what the TypeScript adapters read -----------------------------------------

GOLDEN_CLOCK = 1_764_400_000_123
GOLDEN_JOB = JobState(
    id="golden-job",
    config=JobConfig.model_validate(
        {
            "batchSize": 2,
            "continueOnError": True,
            "schema": {"fields": [{"name": "email", "type": "email", "required": True}]},
        }
    ),
    status=JobStatus.PROCESSING,
    batches=[
        Batch(
            id="golden-b0",
            index=0,
            status=BatchStatus.PENDING,
            record_start_index=0,
            record_end_index=1,
        )
    ],
    total_records=2,
    started_at=1_764_400_000_000,
    distributed=True,
)
GOLDEN_RECORD = ProcessedRecord(
    index=0,
    raw={"email": "bad", "note": "Zoë 😀 中文", "n": 1.5, "ok": True, "none": None},
    parsed={"email": "bad", "note": "Zoë 😀 中文", "n": 1.5, "ok": True, "none": None},
    status=RecordStatus.FAILED,
    errors=[
        ValidationError(
            field="email",
            message="Invalid email",
            code="TYPE_MISMATCH",
            value="bad",
            severity="error",
        )
    ],
    processing_error="boom: Zoë",
)
GOLDEN_RAW = '{"email":"bad","note":"Zoë 😀 中文","n":1.5,"ok":true,"none":null}'
# JSON.stringify's form: no spaces, UTF-8 as is; key order is ours (JSON objects have none).
GOLDEN_ROWS: dict[str, tuple[Any, ...]] = {
    "jobs": (
        "golden-job",
        "PROCESSING",
        '{"batchSize":2,"schema":{"fields":[{"name":"email","type":"email","required":true}]},'
        '"continueOnError":true}',
        '[{"id":"golden-b0","index":0,"status":"PENDING","records":[],"processedCount":0,'
        '"failedCount":0,"recordStartIndex":0,"recordEndIndex":1}]',
        2,
        1_764_400_000_000,
        None,
        1,
    ),
    "batches": (
        "golden-b0",
        "golden-job",
        0,
        "PROCESSING",
        "golden-worker",
        GOLDEN_CLOCK,
        0,
        1,
        0,
        0,
        1,
    ),
    "records": (
        "golden-job",
        "golden-b0",
        0,
        "failed",
        GOLDEN_RAW,
        GOLDEN_RAW,
        '[{"field":"email","message":"Invalid email","code":"TYPE_MISMATCH","value":"bad",'
        '"severity":"error"}]',
        "boom: Zoë",
    ),
}


def write_golden(store: PeeweeStateStore) -> None:
    store.save_job_state(GOLDEN_JOB)
    store.save_batch_records(GOLDEN_JOB.id, "golden-b0", [GOLDEN_RECORD])
    assert store.claim_batch(GOLDEN_JOB.id, "golden-worker").claimed


def stored_rows(database: pw.Database, backend: str, prefix: str) -> dict[str, list[Any]]:
    """The golden job's rows as a raw SELECT returns them (records without their id)."""
    rows = {}
    for table in TABLES:
        columns = [c for c in declared_types(table) if not (table == "records" and c == "id")]
        names = ", ".join(quote(backend, c) for c in columns)
        key = quote(backend, "id" if table == "jobs" else "jobId")
        found = execute(
            database,
            f"SELECT {names} FROM {quote(backend, prefix + table)} WHERE {key} = 'golden-job'",
        )
        assert len(found) == 1, f"{table}: {found}"
        rows[table] = typed(found[0])
    return rows


@pytest.mark.parametrize("backend", ["sqlite", "mysql", "postgres"])
def test_golden_stored_form_of_a_job_a_batch_and_a_record(
    backend: str, url_for: Callable[[str], str]
) -> None:
    """JSON text as JSON.stringify writes it, epoch-ms integers, and ``distributed`` as 0/1
    (SQLite, MySQL) or a boolean (PostgreSQL): what Sequelize and Prisma read back."""
    store, database = make_store(url_for(backend), clock=lambda: GOLDEN_CLOCK)
    try:
        write_golden(store)
        expected = {table: typed(row) for table, row in GOLDEN_ROWS.items()}
        if backend == "postgres":
            expected["jobs"][-1] = ("bool", True)
        assert stored_rows(database, backend, store.table_prefix) == expected
    finally:
        store.drop_tables()
        database.close()


def test_rows_we_write_into_sequelizes_sqlite_tables_have_its_storage_classes(
    tmp_path: Path,
) -> None:
    """Written into the tables Sequelize created, each of our values has the SQLite storage
    class (typeof) Sequelize gave the same column: text JSON, integer BIGINT and 0/1."""
    database = pw.SqliteDatabase(str(copy_sqlite_fixture(tmp_path)))
    node = node_readback("sqlite")
    store = PeeweeStateStore(database, clock=lambda: GOLDEN_CLOCK)
    pending = [
        b.model_copy(update={"id": f"py-{b.id}", "status": BatchStatus.PENDING})
        for b in node.job_a.batches
    ]
    store.save_job_state(node.job_a.model_copy(update={"id": "py-job-A", "batches": pending}))
    store.save_batch_records("py-job-A", "py-node-A-b0", node.batch_records_a["node-A-b0"])
    assert store.claim_batch("py-job-A", "py-worker").claimed

    def storage_classes(table: str, key: str) -> list[dict[str, str]]:
        columns = list(declared_types(table))
        probes = ", ".join(f'typeof("{c}")' for c in columns)
        found = execute(
            database,
            f'SELECT {probes} FROM "{NODE_PREFIX}{table}" WHERE "{key}" = ? ORDER BY rowid',
            ["py-job-A"],
        )
        return [dict(zip(columns, row, strict=True)) for row in found]

    sequelize = {t: sqlite_storage_classes(t) for t in TABLES}
    assert storage_classes("jobs", "id") == sequelize["jobs"][:1]  # job A, not completed
    ours_batches = storage_classes("batches", "jobId")
    assert [ours_batches[0], ours_batches[2]] == [sequelize["batches"][0], sequelize["batches"][2]]
    assert storage_classes("records", "jobId") == sequelize["records"][:3]  # batch b0's records


def test_store_writes_json_objects_into_prismas_postgres_jsonb_tables(
    url_for: Callable[[str], str], tmp_path: Path
) -> None:
    """Our JSON text lands in Prisma's jsonb columns as JSON objects and arrays (which
    state-prisma's parseJson passes through), and reads back unchanged."""
    flavour = FLAVOURS["postgres-prisma-jsonb-strings"]
    with flavour_database(flavour, url_for, tmp_path) as (database, prefix):
        create_node_tables(database, flavour, prefix)
        store = PeeweeStateStore(database, table_prefix=prefix, clock=lambda: GOLDEN_CLOCK)
        write_golden(store)
        kinds = execute(
            database,
            f'SELECT jsonb_typeof(j."config"), jsonb_typeof(j."batches"), jsonb_typeof(r."raw"), '
            f'jsonb_typeof(r."parsed"), jsonb_typeof(r."errors"), j."distributed" '
            f'FROM "{prefix}jobs" j JOIN "{prefix}records" r ON r."jobId" = j."id"',
        )
        assert kinds == [("object", "array", "object", "object", "array", True)]
        assert store.get_batch_records(GOLDEN_JOB.id, "golden-b0") == [GOLDEN_RECORD]
        # A bulk write of many records takes PostgreSQL's other statement form (arrays
        # cast to the columns' types): it too must land as JSON objects.
        many = [
            GOLDEN_RECORD.model_copy(
                update={"index": 100 + i, "parsed": {"i": i}, "errors": [], "status": "processed"}
            )
            for i in range(40)
        ]
        store.save_batch_records(GOLDEN_JOB.id, "golden-b1", many)
        kinds = execute(
            database,
            f'SELECT DISTINCT jsonb_typeof("raw"), jsonb_typeof("parsed"), jsonb_typeof("errors") '
            f'FROM "{prefix}records" WHERE "batchId" = %s',
            ["golden-b1"],
        )
        assert kinds == [("object", "object", "array")]
        assert store.get_batch_records(GOLDEN_JOB.id, "golden-b1") == many
        claimed = GOLDEN_JOB.batches[0].model_copy(
            update={
                "status": BatchStatus.PROCESSING,
                "worker_id": "golden-worker",
                "claimed_at": GOLDEN_CLOCK,
            }
        )
        assert job_state(store, GOLDEN_JOB.id) == GOLDEN_JOB.model_copy(
            update={"batches": [claimed]}
        )


def test_a_bulk_write_follows_json_columns_that_became_jsonb_under_a_live_store(
    url_for: Callable[[str], str],
) -> None:
    """PostgreSQL's bulk upsert is built once from the columns' types; when another process
    changes them (Prisma's jsonb), the next bulk write builds it again and succeeds."""
    store, database = make_store(url_for("postgres"))
    table = store.tables.records._meta.table_name

    def many(start: int) -> list[ProcessedRecord]:
        return [
            ProcessedRecord(index=start + i, raw={"i": i}, parsed={"i": i}, status="pending")
            for i in range(20)
        ]

    try:
        store.save_batch_records("job", "b", many(0))  # builds and keeps the statement
        for column in ("raw", "parsed"):
            execute(
                database,
                f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE jsonb USING "{column}"::jsonb',
            )
        store.save_batch_records("job", "b", many(100))  # the kept statement no longer fits
        assert store.get_batch_records("job", "b") == many(0) + many(100)
        assert execute(database, f'SELECT DISTINCT jsonb_typeof("parsed") FROM "{table}"') == [
            ("object",)
        ]
    finally:
        store.drop_tables()
        database.close()


# -- where our batches table and Node's JSON list part ------------------------------------------


def json_batch_list(database: pw.Database, job_id: str) -> list[dict[str, Any]]:
    """The job row's JSON batch list: what Node's getJobState and getProgress read."""
    text = execute(database, f'SELECT "batches" FROM "{NODE_PREFIX}jobs" WHERE "id" = ?', [job_id])
    return json.loads(text[0][0])  # type: ignore[no-any-return]


def update_b1(tmp_path: Path) -> tuple[PeeweeStateStore, pw.Database]:
    database = pw.SqliteDatabase(str(copy_sqlite_fixture(tmp_path)))
    store = PeeweeStateStore(database)
    state = BatchState(
        batch_id="node-A-b1", status=BatchStatus.COMPLETED, processed_count=3, failed_count=0
    )
    store.update_batch_state(JOB_A, "node-A-b1", state)
    return store, database


def test_update_batch_state_on_a_node_job_is_read_back_from_the_batches_table(
    tmp_path: Path,
) -> None:
    store, _ = update_b1(tmp_path)
    b1 = job_state(store, JOB_A).batches[1]
    assert (b1.status, b1.processed_count, b1.failed_count) == (BatchStatus.COMPLETED, 3, 0)
    assert store.get_progress(JOB_A).current_batch == 2


def test_update_batch_state_keeps_the_json_list_node_reads_in_step(tmp_path: Path) -> None:
    _, database = update_b1(tmp_path)
    b1 = json_batch_list(database, JOB_A)[1]
    assert (b1["status"], b1["processedCount"], b1["failedCount"]) == ("COMPLETED", 3, 0)
