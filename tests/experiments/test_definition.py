import pytest
from pydantic import ValidationError

from experiments.definition import Experiment

BASE = {
    "id": "exp-1",
    "name": "test",
    "variants": [
        {"name": "a", "algorithm": "popularity", "weight": 0.5},
        {"name": "b", "model_alias": "champion", "weight": 0.5},
    ],
}


def _error(**changes) -> str:
    with pytest.raises(ValidationError) as info:
        Experiment.model_validate({**BASE, **changes})
    return str(info.value)


def test_valid_definition_and_control():
    exp = Experiment.model_validate(BASE)
    assert exp.control.name == "a" and exp.primary_metric == "ctr"


def test_validation_errors_are_clear():
    assert "must sum to 1" in _error(variants=[{**BASE["variants"][0], "weight": 0.7}, BASE["variants"][1]])
    assert "exactly one of" in _error(variants=[{"name": "a", "weight": 0.5}, BASE["variants"][1]])
    assert "unique" in _error(variants=[BASE["variants"][0], {**BASE["variants"][1], "name": "a"}])
    assert "unknown metrics" in _error(guardrail_metrics=["latency_p99_typo"])
    assert "experiment id" in _error(id="Bad Id")


def test_demo_definition_loads():
    from experiments.simulation import DEMO_EXPERIMENT

    exp = Experiment.from_yaml(DEMO_EXPERIMENT)
    assert [v.name for v in exp.variants] == ["control", "treatment"]
