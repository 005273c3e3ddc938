"""Redis clients from settings, on one server and on a real 3-master Redis Cluster."""

import uuid

import numpy as np
import pandas as pd
import pytest

from core.contracts import RedisKeys
from core.redis_clients import redis_client, run_scripts
from core.settings import Settings
from core.vectorstore import VectorStore

pytestmark = pytest.mark.redis_topologies  # one server and a Redis Cluster


@pytest.fixture
def store(redis_url, redis_cluster, redis_prefix):
    client = redis_client(redis_url, redis_cluster)
    yield VectorStore(client, RedisKeys(redis_prefix))
    client.close()


def _publish(store: VectorStore, version: str, n_items: int = 3) -> None:
    items = pd.DataFrame({"track_id": [f"t{i}" for i in range(n_items)], "popularity": np.arange(n_items, dtype=float)})
    vectors = np.eye(n_items, 4, dtype=np.float32)
    store.publish(
        version,
        items,
        vectors,
        np.array(["u1", "u2"]),
        np.ones((2, 4), dtype=np.float32),
        meta={"algorithm": "test"},
        fold_in=(np.ones((n_items, 4), dtype=np.float32), np.zeros(4, dtype=np.float32)),
    )


def test_extending_a_catalog_is_one_transaction_in_one_slot(store):
    """The version's artefacts share {m:<version>}: on a cluster MULTI over them would fail with CROSSSLOT otherwise."""
    _publish(store, "7")
    assert store.is_complete("7")
    new = pd.DataFrame({"track_id": ["t9"], "popularity": [0.5]})
    assert store.extend("7", new, np.ones((1, 4), dtype=np.float32), None) == 4
    loaded = store.load("7")
    assert list(loaded.items["track_id"]) == ["t0", "t1", "t2", "t9"] and loaded.item_vectors.shape == (4, 4)
    assert store.catalog_revision("7") == 1 and store.fold_in("7")[0].shape == (4, 4)


def test_aliases_and_deleting_a_version_cross_slots(store):
    for version in ("1", "2"):
        _publish(store, version)
    store.set_alias("champion", "1")
    store.set_alias("challenger", "2")
    assert store.aliases() == {"champion": "1", "challenger": "2"}
    store.remove_alias("challenger")
    assert store.delete_version("2") > 0 and store.versions() == ["1"] and store.user_vector("2", "u1") is None


def test_script_calls_spread_over_every_node_come_back_in_order(redis_url, redis_cluster, redis_prefix):
    client = redis_client(redis_url, redis_cluster)
    script = client.register_script("redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1] .. ':' .. KEYS[1]")
    keys = [f"{redis_prefix}:{{u:{i}}}:k" for i in range(30)]  # 30 slots: every node of the cluster holds some
    assert run_scripts(client, [(script, [k], [str(i)]) for i, k in enumerate(keys)]) == [
        f"{i}:{k}".encode() for i, k in enumerate(keys)
    ]
    assert [client.get(k) for k in keys] == [str(i).encode() for i in range(30)]
    client.close()


def test_versions_published_before_the_hash_tag_are_renamed_in_place(store, redis_cluster):
    """Regression (issue 16): tagging a version's artefacts renamed their keys; an install upgraded in place
    must keep serving the versions it had published under the old names."""
    if redis_cluster:
        pytest.skip("a cluster never held the untagged names (RENAME cannot cross its slots)")
    _publish(store, "3")
    for old, new in store.keys.untagged_model_artefacts("3").items():
        if store.r.exists(new):
            store.r.rename(new, old)  # as an install from before the tag left them
    assert not store.is_complete("3")
    assert store.retag_versions() == 4  # meta, items, item vectors, fold-in (published without similarity vectors)
    assert store.is_complete("3") and store.retag_versions() == 0


def test_a_cluster_needs_a_tcp_node_url():
    with pytest.raises(ValueError, match="ECHOTUNE_REDIS_URL to name a cluster node"):
        redis_client(f"unix:///tmp/{uuid.uuid4().hex}.sock", cluster=True)


def test_cluster_settings_without_a_node_url_name_the_fields(tmp_path):
    with pytest.raises(ValueError, match="ECHOTUNE_REDIS_CLUSTER=true needs ECHOTUNE_REDIS_URL"):
        Settings(home=tmp_path, redis_cluster=True)
    assert Settings(home=tmp_path, redis_cluster=True, redis_url="redis://10.0.0.5:7000").redis_cluster


def test_each_role_gets_its_timeouts_and_its_kind_of_client(settings):
    """connect() is the one place a role's client is made: the API's is asyncio and fails fast, every
    other role's is synchronous with a bounded wait (the CLI and the pipelines had none before)."""
    import redis.asyncio as aredis

    from core.redis_clients import TIMEOUTS, connect

    for role, timeouts in TIMEOUTS.items():
        client = connect(settings, role)
        assert isinstance(client, aredis.RedisCluster if settings.redis_cluster else aredis.Redis) == (role == "api"), (
            role
        )
        if not settings.redis_cluster:  # a cluster client keeps the options per node
            kwargs = client.connection_pool.connection_kwargs
            assert (
                kwargs["socket_timeout"] == timeouts.socket and kwargs["socket_connect_timeout"] == timeouts.connect
            ), role
        if role != "api":  # the asyncio client has not connected yet
            client.close()
    with pytest.raises(ValueError, match="unknown Redis client role 'ui'"):
        connect(settings, "ui")
    with pytest.raises(ValueError, match="ECHOTUNE_REDIS_URL"):
        connect(settings.model_copy(update={"redis_url": None}), "cli")


def test_connected_uses_the_configured_redis_and_closes_its_client(settings, redis_prefix):
    from core.redis_clients import connected

    with connected(settings, "cli") as client:
        client.set(f"{redis_prefix}:probe", "1")
        assert client.get(f"{redis_prefix}:probe") == b"1"
        client.delete(f"{redis_prefix}:probe")


@pytest.mark.parametrize(
    "url, problem",
    [
        ("redis://127.0.0.1:6379/0?ssl_ca_certs={ca}", "use rediss://"),
        ("rediss://127.0.0.1:6380/0?ssl_ca_cert={ca}", "unknown TLS parameter 'ssl_ca_cert'"),
        ("rediss://127.0.0.1:6380/0?ssl_ca_certs={missing}", "ssl_ca_certs="),
        ("rediss://127.0.0.1:6380/0?ssl_ca_certs={ca}&ssl_certfile={ca}", "both ssl_certfile and ssl_keyfile"),
    ],
)
def test_a_redis_url_whose_tls_cannot_work_is_refused_naming_the_setting_and_the_parameter(tmp_path, url, problem):

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="ECHOTUNE_REDIS_URL") as refused:
        Settings(home=tmp_path, redis_url=url.format(ca=ca, missing=tmp_path / "missing.pem"))
    assert problem in str(refused.value)


def test_a_rediss_url_carries_its_certificates_to_every_client_it_builds(tmp_path):
    from core.redis_clients import connect_url

    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("pem")
    url = (
        f"rediss://127.0.0.1:6380/0?ssl_ca_certs={files['ca']}&ssl_certfile={files['cert']}&ssl_keyfile={files['key']}"
    )
    for role in ("api", "api_sync", "worker", "pipeline", "cli"):
        client = connect_url(url, False, role)
        options = client.connection_pool.connection_kwargs
        assert (options["ssl_ca_certs"], options["ssl_certfile"], options["ssl_keyfile"]) == (
            str(files["ca"]),
            str(files["cert"]),
            str(files["key"]),
        ), role
        assert "SSL" in client.connection_pool.connection_class.__name__, role
