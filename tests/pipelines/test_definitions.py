import dagster as dg
import pytest

from pipelines.definitions import build_defs, defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_graph_has_every_asset(settings):
    graph = build_defs(settings).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "synthetic_catalog",
        "synthetic_events",
        "tracks",
        "feedback_events",
        "interactions",
        "recommender_model",
        "serving_vectors",
        "experiment_definitions",
        "demo_experiment_events",
        "experiment_report",
        "hyperparameter_search",
        "user_erasures",
        "feedback_drift",
        "catalog_extension",
        "model_rollout",
    }


def test_every_asset_group_has_checks(settings):
    graph = build_defs(settings).resolve_asset_graph()
    checked = {graph.get(key.asset_key).group_name for key in graph.asset_check_keys}
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == checked == {"ingestion", "training", "serving", "monitoring", "experiments"}


def test_automation_is_on_by_default_and_off_leaves_everything_manual(settings):
    """Every sensor and schedule of the code location, none excepted. Regression (issue 21): the
    running_experiment_reports sensor started running whatever ECHOTUNE_AUTOMATION said."""
    on = build_defs(settings)
    assert {s.name for s in on.sensors} >= {
        "drain_feedback",
        "retrain_when_needed",
        "follow_the_champion",
        "new_catalog_tracks",
        "asset_automation",
        "running_experiment_reports",
        "watch_rollout",
    }
    assert {s.name: s.default_status.value for s in [*on.sensors, *on.schedules]} == {
        s.name: "RUNNING" for s in [*on.sensors, *on.schedules]
    }
    off = build_defs(settings.model_copy(update={"automation": False}))
    assert {s.name: s.default_status.value for s in [*off.sensors, *off.schedules]} == {
        s.name: "STOPPED" for s in [*on.sensors, *on.schedules]
    }


def test_sources_come_from_configuration(settings):
    configured = settings.model_copy(update={"sources": "track_files,spotify_history,spotify_api,interaction_logs"})
    keys = {k.to_user_string() for k in build_defs(configured).resolve_asset_graph().get_all_asset_keys()}
    assert {
        "track_files",
        "listening_history",
        "spotify_api_tracks",
        "interaction_logs",
        "tracks",
        "feedback_events",
    } <= keys
    assert not {"synthetic_catalog", "synthetic_events", "demo_experiment_events"} & keys


@pytest.mark.slow
def test_code_location_loads_the_way_the_ui_loads_it():
    """Regression: `dagster dev` refused the location when domain Definitions objects were imported by
    name into pipelines.definitions ("more than one Definitions object at module scope")."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    dagster = Path(sys.executable).parent / "dagster"
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
