import redis

from core.redis_server import EmbeddedRedis, redis_url


def test_embedded_server_persists_data_across_restarts(tmp_path):
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    client = redis.Redis.from_url(url)
    client.set("kept", "yes")
    client.close()
    server.stop()
    assert not server.owned

    again = EmbeddedRedis(tmp_path)
    client = redis.Redis.from_url(again.start())
    assert client.get("kept") == b"yes"  # the append-only file brought it back
    client.close()
    again.stop()


def test_second_user_attaches_and_does_not_stop_the_server(tmp_path):
    owner = EmbeddedRedis(tmp_path)
    url = owner.start()
    guest = EmbeddedRedis(tmp_path)
    assert guest.start() == url
    assert owner.owned and not guest.owned
    guest.stop()
    assert redis.Redis.from_url(url).ping()
    owner.stop()


def test_configured_url_is_used_as_is(tmp_path):
    with redis_url("redis://example.invalid:6379/0", tmp_path) as url:
        assert url == "redis://example.invalid:6379/0"
    assert not (tmp_path / "redis.url").exists()
