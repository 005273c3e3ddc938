"""Issue 23: with ECHOTUNE_TABLE_ENCRYPTION_KEY set, the whole asset graph runs end to end (a real Dagster
run: ingestion, interactions, training, publishing, reports) and every table it leaves is encrypted."""

from __future__ import annotations

import dagster as dg
import pytest

from core.tables import OfflineStore
from pipelines.automation.jobs import everything_job
from pipelines.definitions import build_defs
from tests.core.test_table_encryption import unreadable_without_the_key

pytestmark = pytest.mark.slow


def test_the_pipeline_runs_end_to_end_on_encrypted_tables(settings, table_encryption_key):
    table_encryption_key()
    defs = build_defs(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        first = defs.resolve_job_def(everything_job.name).execute_in_process(instance=instance)
        assert first.success
        # a second run reads what the first wrote (events, interactions, the catalog) and trains again
        second = defs.resolve_job_def(everything_job.name).execute_in_process(instance=instance)
        assert second.success
    models = {e.asset_key.to_user_string(): e for e in second.get_asset_materialization_events()}
    assert "recommender_model" in models and "serving_vectors" in models
    tables = sorted(settings.layout.tables.rglob("*.parquet"))
    names = {path.name for path in tables}
    assert {"interactions.parquet", "tracks.parquet", "synthetic.parquet"} <= names, names
    listener = OfflineStore(settings.layout.tables).read_interactions()["user_id"].value_counts().index[0]
    for path in tables:
        unreadable_without_the_key(path, listener)
