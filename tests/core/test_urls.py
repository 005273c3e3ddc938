"""URLs that carry a password: told apart, and redacted for log lines and error messages."""

import pytest

from core.settings import Settings
from core.urls import has_password, redacted


@pytest.mark.parametrize(
    "url, secret, shown",
    [
        ("redis://:s3cret@redis.internal:6379/0", True, "redis://:***@redis.internal:6379/0"),
        ("rediss://echotune:s3cret@redis.internal", True, "rediss://echotune:***@redis.internal"),
        ("postgresql://u:p%40ss@db:5432/echo?sslmode=require", True, "postgresql://u:***@db:5432/echo?sslmode=require"),
        ("redis://redis.internal:6379", False, "redis://redis.internal:6379"),
        ("unix:///tmp/redis.sock", False, "unix:///tmp/redis.sock"),
        ("sqlite:///home/mlruns/mlflow.db", False, "sqlite:///home/mlruns/mlflow.db"),
        (None, False, ""),
    ],
)
def test_a_password_is_found_and_redacted(url, secret, shown):
    assert has_password(url) is secret
    assert redacted(url) == shown


def test_a_settings_error_does_not_repeat_the_password(tmp_path):
    with pytest.raises(ValueError) as raised:
        Settings(home=tmp_path, redis_url="unix://:s3cret@/tmp/redis.sock", redis_cluster=True)
    assert "s3cret" not in str(raised.value) and "ECHOTUNE_REDIS_CLUSTER" in str(raised.value)


def test_a_rejected_url_is_not_echoed_in_the_validation_error(tmp_path):
    """pydantic repeats a rejected input in its message; a URL's password must not reach a log that way."""
    with pytest.raises(ValueError) as raised:
        Settings(home=tmp_path, database_url="mysql://user:s3cret@db:3306/echotune")
    assert "s3cret" not in str(raised.value) and "database_url" in str(raised.value)
