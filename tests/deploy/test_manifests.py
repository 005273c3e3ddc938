"""The deployment files: the Kubernetes manifests match the API schemas (kubernetes-validate, offline),
their references resolve, no pod shares a disk (the API's spool is on a claim of each pod's own), the
probes hit real routes, every pod is hardened (no service account token, read-only root, non-root, no
capabilities), NetworkPolicies let only the pods that need them reach each service, MLflow sits behind
its basic-auth app, the Helm values fit Dagster's chart, the compose file has every service, hardened,
and a Dagster instance Dagster accepts, and every ``ECHOTUNE_*`` name any of them passes is a setting.
No Docker and no cluster needed."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
HELM_VALUES = REPO / "deploy" / "helm" / "dagster-values.yaml"
COMPOSE = REPO / "docker-compose.yaml"
COMPOSE_INSTANCE = REPO / "deploy" / "compose" / "dagster.yaml"
# the oldest Kubernetes release the manifests promise to work on, and the newest the validator knows
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SETTING_NAME = re.compile(r"\bECHOTUNE_[A-Z0-9_]+\b")


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _objects() -> list[tuple[str, dict]]:
    return [
        (f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}", doc)
        for path in MANIFESTS
        for doc in _documents(path)
    ]


def _of_kind(kind: str) -> list[dict]:
    return [doc for _, doc in _objects() if doc["kind"] == kind]


WORKLOADS = ("Deployment", "StatefulSet")


def _workloads() -> list[dict]:
    return [doc for _, doc in _objects() if doc["kind"] in WORKLOADS]


def _pod_specs() -> list[tuple[str, dict]]:
    return [(doc["metadata"]["name"], doc["spec"]["template"]["spec"]) for doc in _workloads()]


def test_the_manifests_are_there():
    names = {path.name for path in MANIFESTS}
    assert {"api.yaml", "worker.yaml", "mlflow.yaml", "settings.yaml"} <= names, (
        f"deploy/kubernetes/ holds {sorted(names)}"
    )
    kinds = {doc["kind"] for _, doc in _objects()}
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "NetworkPolicy",
    } <= kinds


def _schema_error(manifest: dict, version: str) -> str | None:
    """What is wrong with ``manifest`` for Kubernetes ``version`` (unknown fields too), or None."""
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return (
            f"not a valid Kubernetes {version} object at {'.'.join(map(str, exc.path)) or '(top level)'}: {exc.message}"
        )
    return None


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("where, manifest", _objects(), ids=[where for where, _ in _objects()])
def test_manifest_matches_the_kubernetes_schema(where, manifest, version):
    error = _schema_error(manifest, version)
    assert error is None, f"{where} is {error}"


# --- every ECHOTUNE_* name is a setting -------------------------------------------------------------
def _known_names() -> set[str]:
    """The fields of core.settings.Settings as environment variables."""
    prefix = Settings.model_config["env_prefix"]
    return {prefix + field.upper() for field in Settings.model_fields}


def _names_passed(path: Path) -> set[str]:
    return set(SETTING_NAME.findall(path.read_text()))


def test_names_are_read_out_of_any_file(tmp_path):
    # keys, values, interpolations and comments alike: `ECHOTUNE_*` itself is not a name
    sample = tmp_path / "sample.yaml"
    sample.write_text("a: ${ECHOTUNE_API_KEYS:-}\nenv:\n  - name: ECHOTUNE_REDIS_URL\n# ECHOTUNE_* and ECHOTUNE_X_1\n")
    assert _names_passed(sample) == {"ECHOTUNE_API_KEYS", "ECHOTUNE_REDIS_URL", "ECHOTUNE_X_1"}
    assert {"ECHOTUNE_REDIS_URL", "ECHOTUNE_DATABASE_URL", "ECHOTUNE_STORAGE_URL"} <= _known_names()
    assert "ECHOTUNE_DAGSTER_PG_URL" not in _known_names()


DEPLOY_FILES = [COMPOSE, HELM_VALUES, *MANIFESTS, REPO / "Dockerfile", *sorted((REPO / "deploy").glob("*/*.*"))]


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_echotune_variable_passed_is_a_setting(path):
    unknown = sorted(_names_passed(path) - _known_names())
    assert not unknown, (
        f"{path.relative_to(REPO)} passes {', '.join(unknown)}, which core.settings.Settings does not read "
        f"(a setting is ECHOTUNE_ + a field name, upper-cased): fix the name, or add the field to Settings"
    )


def test_the_deployments_pass_the_settings_they_need():
    # a deployment that forgot these would start an embedded Redis, SQLite files or a local data folder in its pod
    engines = {"ECHOTUNE_REDIS_URL", "ECHOTUNE_DATABASE_URL", "ECHOTUNE_STORAGE_URL"}
    for name, service in yaml.safe_load(COMPOSE.read_text())["services"].items():
        if service["image"].startswith("echotune:"):
            assert engines <= set(service.get("environment", {})), (
                f"compose service {name} lacks {sorted(engines - set(service.get('environment', {})))}"
            )
    kubernetes = REPO / "deploy" / "kubernetes"
    assert "ECHOTUNE_STORAGE_URL" in yaml.safe_load((kubernetes / "settings.yaml").read_text())["data"], (
        "every pod reads it from the ConfigMap"
    )
    assert {"ECHOTUNE_REDIS_URL", "ECHOTUNE_DATABASE_URL"} <= _names_passed(HELM_VALUES)
    assert {"ECHOTUNE_REDIS_URL", "ECHOTUNE_API_KEYS", "ECHOTUNE_TOKEN_KEY"} <= _names_passed(
        kubernetes / "api.yaml"
    ), "every API pod needs the same token key, or a token signed by one is refused by the next"
    assert "ECHOTUNE_REDIS_URL" in _names_passed(kubernetes / "worker.yaml")
    assert "ECHOTUNE_DATABASE_URL" in _names_passed(kubernetes / "mlflow.yaml")
    # one pseudonym key for every run pod, or each would make its own
    assert "ECHOTUNE_PSEUDONYM_KEY" in _names_passed(HELM_VALUES)


def _helm_user_deployment() -> dict:
    return yaml.safe_load(HELM_VALUES.read_text())["dagster-user-deployments"]["deployments"][0]


def test_no_pod_shares_a_disk():
    # the state is in Redis, PostgreSQL and the object store; a pod's own disk is an emptyDir, a claim of
    # its own (a StatefulSet's volumeClaimTemplates, ReadWriteOnce) or a read-only secret at most
    assert not _of_kind("PersistentVolumeClaim"), "deploy/kubernetes/ claims a shared volume: pods must share no disk"
    for name, spec in [*_pod_specs(), ("helm: echotune", {"volumes": _helm_user_deployment().get("volumes", [])})]:
        for volume in spec.get("volumes", []):
            assert set(volume) in ({"name", "emptyDir"}, {"name", "secret"}), (
                f"{name} mounts volume {volume}: only emptyDir, the pod's own disk (or a secret)"
            )
    for doc in _of_kind("StatefulSet"):
        for claim in doc["spec"].get("volumeClaimTemplates", []):
            assert claim["spec"]["accessModes"] == ["ReadWriteOnce"], (doc["metadata"]["name"], claim)
    assert "ReadWriteMany" not in HELM_VALUES.read_text() + "".join(path.read_text() for path in MANIFESTS)


def _api() -> dict:
    return next(doc for doc in _workloads() if doc["metadata"]["name"] == "echotune-api")


def test_the_api_spool_is_on_a_claim_of_each_pod_not_an_empty_dir():
    """Issue 23: the spool sat on an emptyDir, lost with the pod that took the feedback."""
    api = _api()
    assert api["kind"] == "StatefulSet", "a Deployment's pods cannot each keep a claim of their own"
    claims = {claim["metadata"]["name"]: claim for claim in api["spec"].get("volumeClaimTemplates", [])}
    container = api["spec"]["template"]["spec"]["containers"][0]
    var = next(m for m in container["volumeMounts"] if m["mountPath"] == "/app/var")  # the spool is under var/
    assert var["name"] in claims, f"/app/var is volume {var['name']}, not one of the claims {sorted(claims)}"
    assert var["name"] not in {v["name"] for v in api["spec"]["template"]["spec"].get("volumes", [])}
    # kept when a pod is deleted or scaled away: its spool waits for the pod of the same name
    assert api["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def test_every_secret_key_read_is_created_by_the_documented_command():
    created = set(
        re.findall(
            r"--from-(?:literal|file)=([a-z0-9-]+)=", (REPO / "deploy" / "kubernetes" / "settings.yaml").read_text()
        )
    )
    for name, spec in _pod_specs():
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] == "echotune-secrets", (name, volume)
                missing = {item["key"] for item in volume["secret"]["items"]} - created
                assert not missing, f"{name} mounts secret keys {sorted(missing)} that settings.yaml does not create"
    env = [item for _, spec in _pod_specs() for container in spec["containers"] for item in container.get("env", [])]
    for item in [*env, *_helm_user_deployment()["env"]]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref and not ref.get("optional"):
            assert ref["name"] == "echotune-secrets", item
            assert ref["key"] in created, (
                f"{item['name']} reads secret key {ref['key']}, which `kubectl create secret` in settings.yaml does not create"
            )


# --- references between the manifests ---------------------------------------------------------------
def test_selectors_and_scale_targets_name_objects_that_exist():
    deployments = {doc["metadata"]["name"]: doc["spec"]["template"]["metadata"]["labels"] for doc in _workloads()}
    for doc in _workloads():
        selector = doc["spec"]["selector"]["matchLabels"]
        assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items(), (
            f"Deployment {doc['metadata']['name']} selects no pod of its own"
        )
    for kind, selector_of in (
        ("Service", lambda d: d["spec"]["selector"]),
        ("PodDisruptionBudget", lambda d: d["spec"]["selector"]["matchLabels"]),
    ):
        for doc in _of_kind(kind):
            selected = [name for name, labels in deployments.items() if selector_of(doc).items() <= labels.items()]
            assert selected, f"{kind} {doc['metadata']['name']} selects the pods of no Deployment"
    kinds = {doc["metadata"]["name"]: doc["kind"] for doc in _workloads()}
    for doc in _of_kind("HorizontalPodAutoscaler"):
        target = doc["spec"]["scaleTargetRef"]
        assert kinds.get(target["name"]) == target["kind"], (
            f"HPA {doc['metadata']['name']} scales {target['kind']} {target['name']}, which is not here"
        )
    services = {doc["metadata"]["name"] for doc in _of_kind("Service")}
    for doc in _of_kind("StatefulSet"):
        assert doc["spec"]["serviceName"] in services, f"StatefulSet {doc['metadata']['name']}: no governing Service"


def test_config_maps_referenced_exist():
    config_maps = {doc["metadata"]["name"]: doc["data"] for doc in _of_kind("ConfigMap")}
    helm = _helm_user_deployment()
    specs = [
        *_pod_specs(),
        ("helm: echotune", {"containers": [{"envFrom": [{"configMapRef": c} for c in helm["envConfigMaps"]]}]}),
    ]
    for name, spec in specs:
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, (
                        f"{name} reads ConfigMap {source['configMapRef']['name']}, which is not in deploy/kubernetes/"
                    )
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in config_maps.get(ref["name"], {}), (
                        f"{name}: {item['name']} reads {ref['name']}/{ref['key']}, which does not exist"
                    )


def test_api_probes_hit_the_health_routes_and_every_pod_runs_as_the_image_user():
    from serving.routes import health

    routes = {route.path for route in health.router.routes}
    container = _api()["spec"]["template"]["spec"]["containers"][0]
    probes = {
        kind: container.get(kind, {}).get("httpGet", {}).get("path")
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    # readiness stays 200 in degraded mode (tests/serving/test_degraded.py); liveness asks no dependency
    assert probes["readinessProbe"] == "/health/ready" and probes["livenessProbe"] == "/health/live", probes
    assert set(probes.values()) <= routes, f"probes {probes} against routes {sorted(routes)}"
    for name, spec in _pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == 10001, (
            name
        )  # the Dockerfile's USER


# --- Dagster's Helm chart ---------------------------------------------------------------------------
def _as_pod(pod_spec: dict, container: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "check"},
        "spec": {**pod_spec, "containers": [{"name": "check", "image": "echotune", **container}]},
    }


def test_helm_values_configure_the_code_location_and_the_k8s_run_launcher():
    values = yaml.safe_load(HELM_VALUES.read_text())
    user = values["dagster-user-deployments"]
    assert user["enabled"] and [d["name"] for d in user["deployments"]] == ["echotune"]
    deployment = user["deployments"][0]
    assert all(set(volume) == {"name", "emptyDir"} for volume in deployment.get("volumes", [])), (
        "runs and the code location share no disk: an emptyDir of their own at most"
    )
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "pipelines.definitions"], (
        "the code location is pipelines.definitions"
    )
    assert deployment["includeConfigInLaunchedRuns"]["enabled"], (
        "runs must get the code location's settings, secrets and volumes"
    )
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False and values["global"]["postgresqlSecretName"]
    # the schema and driver `echotune pipeline` gives Dagster in the database of ECHOTUNE_DATABASE_URL
    assert values["postgresql"]["postgresqlParams"] == {"options": "-csearch_path=dagster"}
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert {"key": "echotune/training", "limit": 1} in limits, "one training run at a time"
    assert {"key": "echotune/drain", "limit": 1} in limits, "one drain at a time, in the order the sensor asked"
    # the Kubernetes objects inside the values, checked as parts of a pod against the API schema
    code_location = _as_pod(
        {"securityContext": deployment["podSecurityContext"]},
        {
            "env": deployment["env"],
            "envFrom": [{"configMapRef": c} for c in deployment["envConfigMaps"]],
            "resources": deployment["resources"],
            "securityContext": deployment["securityContext"],
            "volumeMounts": deployment.get("volumeMounts", []),
        },
    )
    code_location["spec"]["volumes"] = deployment.get("volumes", [])
    run_config = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    run_pod = _as_pod(run_config["podSpecConfig"], run_config["containerConfig"])
    for what, pod in (("the code location", code_location), ("runK8sConfig", run_pod)):
        error = _schema_error(pod, KUBERNETES_VERSIONS[0])
        assert error is None, f"deploy/helm/dagster-values.yaml: {what}, as a pod, is {error}"


# --- docker compose ---------------------------------------------------------------------------------
def test_compose_file_has_every_service_on_the_one_image():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    expected = {"redis", "postgres", "mlflow", "dagster-webserver", "dagster-daemon", "code-server", "api", "worker"}
    assert set(services) == expected, f"services {sorted(services)}, expected {sorted(expected)}"
    ours = {name for name, service in services.items() if name not in ("redis", "postgres")}
    assert {services[name]["image"] for name in ours} == {"echotune:latest"}
    roles = {name: services[name]["command"][0] for name in ours}
    assert roles == {
        "mlflow": "mlflow-ui",
        "dagster-webserver": "dagster-webserver",
        "dagster-daemon": "dagster-daemon",
        "code-server": "code-server",
        "api": "serve",
        "worker": "worker",
    }, roles
    declared = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(".") or source in declared, (
                f"{name} mounts volume {source!r}, not declared under volumes:"
            )
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"


def test_compose_dagster_instance_is_valid_and_uses_the_compose_database():
    from dagster._core.instance.config import dagster_instance_config

    # Dagster's own schema check of the file, as the webserver and daemon load it (no connection made)
    config, _ = dagster_instance_config(str(COMPOSE_INSTANCE.parent), config_filename=COMPOSE_INSTANCE.name)
    database = config["storage"]["postgres"]["postgres_db"]
    compose = yaml.safe_load(COMPOSE.read_text())
    # the URL as compose passes it, with a password in place of the interpolation
    url = urlsplit(
        compose["x-echotune-env"]["ECHOTUNE_DATABASE_URL"].replace(
            "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}", "secret"
        )
    )
    assert (database["username"], database["hostname"], database["port"], database["db_name"]) == (
        url.username,
        url.hostname,
        url.port,
        url.path.lstrip("/"),
    ), "deploy/compose/dagster.yaml and ECHOTUNE_DATABASE_URL in docker-compose.yaml name different databases"
    assert database["params"] == {"options": "-csearch_path=dagster"}, (
        "Dagster's schema, beside MLflow's (tables of the same names)"
    )
    assert "password" not in database, "the password comes from PGPASSWORD, never from a file"
    assert compose["x-dagster-env"]["PGPASSWORD"] == "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {"key": "echotune/training", "limit": 1} in limits, "one training run at a time"
    assert {"key": "echotune/drain", "limit": 1} in limits, "one drain at a time, in the order the sensor asked"
    init = (REPO / "deploy" / "compose" / "postgres-init.sql").read_text()
    assert "CREATE SCHEMA IF NOT EXISTS dagster;" in init and "CREATE SCHEMA IF NOT EXISTS mlflow;" in init


# --- every pod hardened (issue 23) --------------------------------------------------------------------
def _helm_pods() -> list[tuple[str, dict]]:
    """The pods Dagster's chart makes from our values: the code location, and a run (runK8sConfig,
    with the code location's container settings, includeConfigInLaunchedRuns)."""
    deployment = _helm_user_deployment()
    run_config = yaml.safe_load(HELM_VALUES.read_text())["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    container = {
        "securityContext": deployment["securityContext"],
        "volumeMounts": deployment.get("volumeMounts", []),
        **run_config["containerConfig"],
    }
    code_location = {
        "securityContext": deployment["podSecurityContext"],
        "volumes": deployment.get("volumes", []),
        "containers": [container],
    }
    run = {**run_config["podSpecConfig"], "volumes": deployment.get("volumes", []), "containers": [container]}
    return [("helm: code location", code_location), ("helm: run", run)]


def _every_pod() -> list[tuple[str, dict]]:
    return [*_pod_specs(), *_helm_pods()]


@pytest.mark.parametrize("name, spec", _every_pod(), ids=[name for name, _ in _every_pod()])
def test_every_container_is_read_only_non_root_and_without_capabilities(name, spec):
    assert spec["securityContext"]["runAsNonRoot"] is True, f"{name}: runAsNonRoot"
    mounted = {}
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem"
        assert context.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation"
        assert context.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: capabilities not dropped"
        mounted.update({m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])})
    # a read-only root still needs a writable /tmp (Python, gunicorn, pyarrow's spills)
    assert "/tmp" in mounted, f"{name}: no volume at /tmp on a read-only root"


@pytest.mark.parametrize(
    "name, spec",
    [*_pod_specs(), _helm_pods()[1]],
    ids=[name for name, _ in [*_pod_specs(), _helm_pods()[1]]],
)
def test_no_pod_mounts_a_service_account_token(name, spec):
    # none of them calls the Kubernetes API (Dagster's daemon launches the runs, with the chart's own account)
    assert spec.get("automountServiceAccountToken") is False, f"{name}: automountServiceAccountToken"


def _policies() -> list[dict]:
    return _of_kind("NetworkPolicy")


def _selects(selector: dict, labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get("matchExpressions")


def _allowed_from(target_labels: dict) -> list[dict]:
    """The ``from`` peers of every policy selecting pods with ``target_labels`` (none: nobody)."""
    return [
        peer
        for policy in _policies()
        if _selects(policy["spec"]["podSelector"], target_labels)
        for rule in policy["spec"].get("ingress", [])
        for peer in rule.get("from", [])
    ]


def _pod_labels() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc["spec"]["template"]["metadata"]["labels"] for doc in _workloads()}


def test_network_policies_deny_by_default_and_admit_each_workload_only_from_where_it_is_used():
    labels = _pod_labels()
    deny = [p for p in _policies() if not p["spec"].get("ingress")]
    for name, pod in labels.items():
        assert any(_selects(p["spec"]["podSelector"], pod) for p in deny), f"{name}: no default-deny policy selects it"
        for peer in _allowed_from(pod):
            assert "podSelector" in peer or "namespaceSelector" in peer, f"{name}: admits {peer} (everyone)"
            assert peer.get("namespaceSelector", {}).get("matchLabels"), f"{name}: admits every namespace"
    namespaces = {
        name: {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for peer in _allowed_from(pod)
            if "namespaceSelector" in peer
        }
        for name, pod in labels.items()
    }
    assert namespaces["echotune-api"] == {"ingress-nginx", "monitoring"}
    assert namespaces["echotune-mlflow"] == {"ingress-nginx"}, "MLflow: only behind the ingress (basic auth)"
    assert namespaces["echotune-worker"] == {"monitoring"}


@pytest.mark.parametrize(
    "engine, clients, others",
    [
        ("redis", {"echotune-api", "echotune-worker"}, {"echotune-mlflow"}),
        ("postgresql", {"echotune-mlflow"}, {"echotune-api", "echotune-worker"}),
    ],
)
def test_redis_and_postgresql_admit_only_the_pods_that_use_them(engine, clients, others):
    peers = _allowed_from({"app.kubernetes.io/name": engine})
    assert peers, f"no NetworkPolicy guards {engine}"
    admitted = {
        name
        for name, pod in _pod_labels().items()
        if any("podSelector" in peer and _selects(peer["podSelector"], pod) for peer in peers)
    }
    assert admitted == clients, f"{engine} admits {sorted(admitted)}, expected {sorted(clients)}"
    assert not admitted & others
    # Dagster's pods (code location, runs, webserver, daemon) live in their namespace
    assert {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in peers
        if "namespaceSelector" in peer
    } == {"dagster"}


def test_mlflow_runs_behind_its_basic_auth_app_with_credentials_from_the_secret():
    mlflow = next(doc for doc in _workloads() if doc["metadata"]["name"] == "echotune-mlflow")
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[0] == "mlflow-ui" and args[args.index("--app-name") + 1] == "basic-auth", args
    env = {item["name"]: item for item in container["env"]}
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "echotune-secrets", name
    config = env["MLFLOW_AUTH_CONFIG_PATH"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert str(Path(config).parent) in mounts, f"{config} is on no volume"
    for service in _of_kind("Service"):
        if service["metadata"]["name"] == "echotune-mlflow":
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "MLflow must not be exposed outside"


# --- compose hardened (issue 23) ------------------------------------------------------------------------
def _compose_services() -> list[tuple[str, dict]]:
    return list(yaml.safe_load(COMPOSE.read_text())["services"].items())


@pytest.mark.parametrize("name, service", _compose_services(), ids=[name for name, _ in _compose_services()])
def test_every_compose_service_is_hardened(name, service):
    assert service.get("read_only") is True, f"{name}: read_only"
    assert service.get("cap_drop") == ["ALL"], f"{name}: cap_drop"
    assert "no-new-privileges:true" in service.get("security_opt", []), f"{name}: no-new-privileges"
    limit = service.get("mem_limit") or service.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
    assert limit, f"{name}: no memory limit"
    assert "/tmp" in service.get("tmpfs", []), f"{name}: a read-only root needs a tmpfs /tmp"
    assert not service.get("cap_add"), f"{name}: adds capabilities back"


def test_compose_redis_requires_a_password_the_services_carry_in_their_url():
    compose = yaml.safe_load(COMPOSE.read_text())
    redis_service = compose["services"]["redis"]
    command = " ".join(redis_service["command"])
    assert "requirepass" in command and "$$REDIS_PASSWORD" in command, command
    # the password reaches redis-server on standard input, not in its arguments (`ps` shows those)
    assert "--requirepass" not in command and "redis-server -" in command
    assert redis_service["environment"]["REDIS_PASSWORD"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
    assert redis_service["environment"]["REDISCLI_AUTH"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}", "health check"
    url = urlsplit(
        compose["x-echotune-env"]["ECHOTUNE_REDIS_URL"].replace("${REDIS_PASSWORD:?set REDIS_PASSWORD}", "pw")
    )
    assert (url.password, url.hostname) == ("pw", "redis")
    for name, service in compose["services"].items():
        if service["image"].startswith("echotune:"):
            env = service["environment"]
            assert env["ECHOTUNE_REDIS_URL"] == compose["x-echotune-env"]["ECHOTUNE_REDIS_URL"], name
