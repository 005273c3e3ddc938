import pytest

from tests.conftest import SHARED_DATA

HIT_PREDICTOR = SHARED_DATA / "spotify-hit-predictor"
LASTFM = SHARED_DATA / "hetrec-lastfm"


@pytest.fixture
def hit_predictor_files():
    files = sorted(HIT_PREDICTOR.glob("dataset-of-*.csv"))
    if not files:
        pytest.skip(f"real data not present at {HIT_PREDICTOR} (a fresh clone does not have ../shared/data)")
    return files


@pytest.fixture
def lastfm_user_artists():
    path = LASTFM / "user_artists.dat"
    if not path.exists():
        pytest.skip(f"real data not present at {path} (a fresh clone does not have ../shared/data)")
    return path
