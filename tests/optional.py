"""Marks for tests of optional parts that an install may leave out."""

import importlib.util

import pytest

# LightFM builds from source (a C compiler); `make install` adds it when `cc` exists, so CI runs these
needs_lightfm = pytest.mark.skipif(
    importlib.util.find_spec("lightfm") is None,
    reason="LightFM is not installed (the lightfm extra needs a C compiler: pip install -e '.[lightfm]')",
)
