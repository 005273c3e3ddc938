"""What `echotune demo` prints works as printed (issue 21, item 9: its sample feedback curl posted
``"track_id": "bad-id"`` and got a 422)."""

import pytest

from echotune.demo import feedback_example
from tests.serving.conftest import client, known_user_id, published, served, settings, trained, world  # noqa: F401  (fixtures: the API on a real Redis)

pytestmark = pytest.mark.usefixtures("published")


def test_the_printed_feedback_is_accepted_by_the_api(client, known_user_id):  # noqa: F811
    listed = served(client, known_user_id, count=5)
    body = feedback_example(known_user_id, listed)
    assert body["track_id"] == listed["tracks"][0]["track_id"]
    response = client.post("/feedback", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1
    # what it printed before: a 422 naming track_id
    bad = client.post("/feedback", json={**body, "track_id": "bad-id"})
    assert bad.status_code == 422 and "track_id" in bad.text
