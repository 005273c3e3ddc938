"""What the model cache does to the garbage collector: a large catalog is frozen out of its reach, a
small one is not (a full collection of the whole process would cost more than it saves)."""

import gc

from serving import model_cache
from serving.model_cache import FREEZE_MIN_TRACKS, _freeze_long_lived


def test_only_a_large_catalog_is_frozen_and_a_smaller_successor_thaws_it():
    """Regression (issue 22): every API start collected the whole process (0.3 s and more in the test
    process, ~100 starts) to freeze a 300-track catalog that a collection walks in well under 1 ms."""
    frozen_before = gc.get_freeze_count()  # the test session freezes what it imported (tests/conftest.py)
    try:
        _freeze_long_lived(300)
        assert gc.get_freeze_count() == frozen_before and not model_cache._froze  # small: the collector is left alone
        _freeze_long_lived(FREEZE_MIN_TRACKS)
        assert gc.get_freeze_count() > 0 and model_cache._froze  # large: frozen
        _freeze_long_lived(300)
        assert (
            gc.get_freeze_count() == 0 and not model_cache._froze
        )  # replaced by a small one: thawed, so the large one can be freed
    finally:
        model_cache._froze = False
        if frozen_before:
            gc.collect()
            gc.freeze()
