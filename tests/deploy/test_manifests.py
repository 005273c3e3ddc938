"""The deployment files: the Kubernetes manifests match the API schemas (kubernetes-validate, offline),
their references resolve, no pod shares a disk, the probes hit real routes, the Helm values fit
Dagster's chart, the compose file has every service and a Dagster instance Dagster accepts, and every
``ECHOTUNE_*`` name any of them passes is a setting. No Docker and no cluster needed."""

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


def _pod_specs() -> list[tuple[str, dict]]:
    return [(doc["metadata"]["name"], doc["spec"]["template"]["spec"]) for doc in _of_kind("Deployment")]


def test_the_manifests_are_there():
    names = {path.name for path in MANIFESTS}
    assert {"api.yaml", "worker.yaml", "mlflow.yaml", "settings.yaml"} <= names, (
        f"deploy/kubernetes/ holds {sorted(names)}"
    )
    kinds = {doc["kind"] for _, doc in _objects()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"} <= kinds


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
    # the state is in Redis, PostgreSQL and the object store; a pod's own disk is an emptyDir at most
    assert not _of_kind("PersistentVolumeClaim"), "deploy/kubernetes/ claims a volume: pods must share no disk"
    for name, spec in [*_pod_specs(), ("helm: echotune", {"volumes": _helm_user_deployment().get("volumes", [])})]:
        for volume in spec.get("volumes", []):
            assert set(volume) == {"name", "emptyDir"}, (
                f"{name} mounts volume {volume}: only emptyDir, the pod's own disk"
            )
    assert "ReadWriteMany" not in HELM_VALUES.read_text() + "".join(path.read_text() for path in MANIFESTS)


def test_every_secret_key_read_is_created_by_the_documented_command():
    created = set(
        re.findall(r"--from-literal=([a-z0-9-]+)=", (REPO / "deploy" / "kubernetes" / "settings.yaml").read_text())
    )
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
    deployments = {
        doc["metadata"]["name"]: doc["spec"]["template"]["metadata"]["labels"] for doc in _of_kind("Deployment")
    }
    for doc in _of_kind("Deployment"):
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
    for doc in _of_kind("HorizontalPodAutoscaler"):
        assert doc["spec"]["scaleTargetRef"]["name"] in deployments, (
            f"HPA {doc['metadata']['name']} scales a Deployment that is not here"
        )


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
    api = next(doc for doc in _of_kind("Deployment") if doc["metadata"]["name"] == "echotune-api")
    container = api["spec"]["template"]["spec"]["containers"][0]
    probes = {
        kind: container.get(kind, {}).get("httpGet", {}).get("path")
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes["readinessProbe"] == "/health/ready" and probes["livenessProbe"] == "/health", probes
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
    assert "volumes" not in deployment and "volumeMounts" not in deployment, "runs and the code location share no disk"
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
        },
    )
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
