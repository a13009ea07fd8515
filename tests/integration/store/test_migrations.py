"""Alembic migrations up and down on SQLite and PostgreSQL, and models == migrated schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from keel.store.engine import create_engine_for
from keel.store.migrate import current, downgrade, head, upgrade
from keel.store.schema import Base

SPAN_INDEXES = {
    "ix_spans_kind_start_time",
    "ix_spans_start_time",
    "ix_spans_trace_id_start_time",
    "ix_spans_alias_start_time",
    "ix_spans_user_id_start_time",
    "ix_spans_session_id_start_time",
}


def _tables_and_indexes(url: str) -> tuple[set[str], set[str]]:
    engine = create_engine_for(url)
    try:
        inspector = inspect(engine)
        tables = set(inspector.get_table_names())
        indexes = (
            {ix["name"] for ix in inspector.get_indexes("spans")} if "spans" in tables else set()
        )
        return tables, {name for name in indexes if name}
    finally:
        engine.dispose()


def test_upgrade_and_downgrade_round_trip(blank_db_url: str) -> None:
    assert current(blank_db_url) is None

    upgrade(blank_db_url)
    assert current(blank_db_url) == head() == "0006"
    tables, indexes = _tables_and_indexes(blank_db_url)
    prompt_tables = {"prompt_versions", "prompt_labels", "prompt_label_events", "audit_events"}
    eval_tables = {"dataset_versions", "dataset_items", "eval_runs", "eval_results"}
    assert {"spans", "scores", *prompt_tables, *eval_tables} <= tables
    assert indexes == SPAN_INDEXES

    downgrade(blank_db_url, "base")
    assert current(blank_db_url) is None
    tables, _ = _tables_and_indexes(blank_db_url)
    assert "spans" not in tables

    upgrade(blank_db_url)  # a downgraded database can be upgraded again
    assert current(blank_db_url) == "0006"

    downgrade(blank_db_url, "0005")  # datasets and runs go, the registry stays
    tables, _ = _tables_and_indexes(blank_db_url)
    assert prompt_tables <= tables and not eval_tables & tables

    downgrade(blank_db_url, "0004")  # the registry's tables go, the spans stay
    tables, _ = _tables_and_indexes(blank_db_url)
    assert "spans" in tables and not prompt_tables & tables

    downgrade(blank_db_url, "0001")  # one step back: the full indexes again
    assert current(blank_db_url) == "0001"
    assert _tables_and_indexes(blank_db_url)[1] == SPAN_INDEXES


def test_upgrade_to_head_twice_is_a_no_op(db_url: str) -> None:
    upgrade(db_url)
    assert current(db_url) == head()


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_json_columns_are_jsonb_on_postgresql(engine: Engine, dialect: str) -> None:
    if dialect != "postgresql":
        return
    with engine.connect() as connection:
        types = dict(
            connection.execute(
                text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'spans'"
                )
            ).all()
        )
    assert types["input"] == types["metadata"] == types["attempts"] == "jsonb"
    assert types["start_time"] == "double precision"


def test_user_and_session_lookups_use_their_partial_indexes(engine: Engine, dialect: str) -> None:
    queries = {
        "ix_spans_user_id_start_time": "SELECT span_id FROM spans WHERE user_id = 'u' "
        "AND start_time > 0 ORDER BY start_time DESC",
        "ix_spans_session_id_start_time": "SELECT span_id FROM spans WHERE session_id = 's' "
        "AND start_time > 0 ORDER BY start_time DESC",
    }
    explain = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
    with engine.connect() as connection:
        if dialect == "postgresql":
            connection.execute(text("SET enable_seqscan = off"))  # an empty table: force the choice
        for index, query in queries.items():
            plan = " ".join(str(row) for row in connection.execute(text(explain + query)).all())
            assert index in plan
