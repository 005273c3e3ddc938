import dagster as dg

from pipelines.definitions import build_defs, defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_graph_has_every_asset(settings):
    graph = build_defs(settings).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"tracks", "feedback_events", "interactions", "recommender_model", "serving_vectors", "experiment_report"}
