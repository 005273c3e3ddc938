import json

import pytest
from click.testing import CliRunner

from core.settings import get_settings
from echotune.cli import main

TRACK = "4uLU6hMCjMI75M1A2tKUQC"


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOTUNE_HOME", str(tmp_path))
    get_settings.cache_clear()

    def invoke(*args):
        return CliRunner().invoke(main, list(args))

    yield invoke
    get_settings.cache_clear()


def test_ingest_tracks_prints_one_json_line_and_is_idempotent(run, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text(f"uri,energy\nspotify:track:{TRACK},0.4\n{TRACK},0.4\n")
    first = run("ingest", "tracks", str(csv))
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output.strip().splitlines()[-1])
    assert {k: summary[k] for k in ("read", "accepted", "rejected", "duplicates", "new_tracks")} == {
        "read": 2,
        "accepted": 1,
        "rejected": 0,
        "duplicates": 1,
        "new_tracks": 1,
    }
    again = json.loads(run("ingest", "tracks", str(csv)).output.strip().splitlines()[-1])
    assert again["new_tracks"] == 0 and again["catalog_tracks"] == 1


def test_too_many_rejects_exit_non_zero_but_keep_valid_rows(run, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text(f"uri,energy\n{TRACK},0.4\nnot-an-id,0.4\n")
    result = run("ingest", "tracks", str(csv))
    assert result.exit_code == 3
    assert json.loads(result.stdout.strip().splitlines()[-1])["rejected"] == 1
    assert (tmp_path / "data" / "tables" / "tracks.parquet").exists()


def test_unusable_input_is_a_clear_error(run, tmp_path):
    bad = tmp_path / "log.csv"
    bad.write_text("a,b\n1,2\n")
    result = run("ingest", "interactions", str(bad))
    assert result.exit_code == 1 and "no user column" in result.output
    assert run("ingest", "tracks", str(tmp_path / "missing.csv")).exit_code == 2


def test_pseudonym_refuses_without_the_key_the_imports_used(run, tmp_path):
    """Regression (issue 23): without the key, `echotune pseudonym` made a new one and printed a pseudonym
    that matched nothing, so an admin erased an id that held nothing and got a receipt."""
    refused = run("pseudonym", "alice")
    assert refused.exit_code != 0 and "ECHOTUNE_PSEUDONYM_KEY" in refused.output
    assert not (tmp_path / "var" / "pseudonym.key").exists()  # and no key was made on the way
    csv = tmp_path / "t.csv"
    csv.write_text(f"uri,energy\nspotify:track:{TRACK},0.4\n")
    from core.ingest.service import pseudonymizer

    key_holder = pseudonymizer(get_settings())  # what an import does: the key file is created once
    answered = run("pseudonym", "alice")
    assert answered.exit_code == 0 and answered.output.strip() == key_holder("alice")
