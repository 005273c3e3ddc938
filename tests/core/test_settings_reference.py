"""docs/settings.md is generated from the settings class: stale means a test failure, not a wrong page."""

from core.settings import Settings
from core.settings_reference import REFERENCE, render, sections
from tests.conftest import REPO


def test_the_settings_reference_is_what_the_class_says():
    assert (REPO / REFERENCE).read_text() == render(), "docs/settings.md is stale: run `echotune docs`"


def test_every_setting_is_in_a_section_and_described():
    listed = [name for _, names in sections() for name in names]
    assert sorted(listed) == sorted(Settings.model_fields)
    undescribed = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert not undescribed, f"settings without a description: {undescribed}"


def test_a_changed_default_makes_the_reference_stale(monkeypatch):
    before = render()
    monkeypatch.setattr(Settings.model_fields["drain_every_seconds"], "default", 61)
    assert render() != before and "| `ECHOTUNE_DRAIN_EVERY_SECONDS` | `61` |" in render()
