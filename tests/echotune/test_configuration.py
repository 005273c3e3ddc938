"""Only servable algorithms reach the registry: a pipeline configured with one that cannot be served
fails before training, with a message that says which can; offline training still takes any."""

import pytest
from click.testing import CliRunner

from core.settings import Settings, get_settings
from echotune.cli import main
from models import SERVABLE_ALGORITHMS


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOTUNE_HOME", str(tmp_path))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_an_unservable_algorithm_fails_the_pipeline_before_training(env, tmp_path):
    env.setenv("ECHOTUNE_ALGORITHM", "ease")
    result = CliRunner().invoke(main, ["pipeline"])
    assert result.exit_code != 0
    assert "ECHOTUNE_ALGORITHM: algorithm 'ease' cannot be served online" in result.output
    assert "lowrank_ease" in result.output and "echotune train" in result.output
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlruns").exists()  # nothing ran


def test_servable_algorithms_are_the_ones_with_a_linear_fold_in():
    assert "ease" not in SERVABLE_ALGORITHMS and {"lowrank_ease", "lightfm", "popularity"} <= set(SERVABLE_ALGORITHMS)
    for name in SERVABLE_ALGORITHMS:
        assert Settings(algorithm=name).algorithm == name
    with pytest.raises(ValueError, match="unknown algorithm 'nope'"):
        Settings(algorithm="nope")


def test_offline_training_still_takes_any_algorithm(tmp_path):
    path = tmp_path / "i.csv"
    path.write_text(
        "user_id,item_id,weight\n" + "".join(f"u{u},i{(u + k) % 7},1\n" for u in range(12) for k in range(3))
    )
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--interactions",
            str(path),
            "--algorithm",
            "ease",
            "--params",
            '{"min_users": 1}',
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert '"algorithm": "ease"' in result.output
