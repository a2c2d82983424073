"""The deploy files say what they must (no Docker engine runs here, so this is read, not built)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from service.memory import MALLOC_DEFAULTS

from .support import ROOT, npm_install

DOCKERFILE = (ROOT / "Dockerfile.isnet-tiny").read_text()


def test_dockerfile_runtime_stage_is_slim_non_root_and_healthchecked():
    runtime = DOCKERFILE.rsplit("FROM ", 1)[1]
    assert re.match(r"python:3\.\d+-slim\b", runtime)
    user = re.search(r"^USER (\S+)", runtime, re.M)
    assert user and user.group(1) not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/api/bg/health", runtime, re.M)
    assert re.search(r'^CMD \["python", "app_isnet_tiny.py"\]', runtime, re.M)


def test_dockerfile_fetches_the_model_at_build_time_and_sets_the_memory_environment():
    assert "requirements-isnet-tiny.txt" in DOCKERFILE
    assert re.search(r"^RUN .*python -m service fetch .*isnet-general-tiny", DOCKERFILE, re.M)
    for name, value in MALLOC_DEFAULTS.items():
        assert f"{name}={value}" in DOCKERFILE
    assert "BG_REMOVAL_THREADS" not in DOCKERFILE  # auto: the container's cores (its cpuset and --cpus)


def test_railway_builds_the_dockerfile_and_checks_health():
    config = json.loads((ROOT / "railway.json").read_text())
    assert config["build"] == {"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile.isnet-tiny"}
    assert config["deploy"]["healthcheckPath"] == "/api/bg/health"
    assert config["deploy"]["healthcheckTimeout"] >= 60
    assert config["deploy"]["restartPolicyType"] == "ON_FAILURE"


def requirement_names(filename: str) -> set[str]:
    lines = [l.strip() for l in (ROOT / filename).read_text().splitlines()
             if l.strip() and not l.startswith(("#", "-r"))]
    assert all("==" in l for l in lines), lines  # pinned
    return {l.split("==")[0].lower() for l in lines}


def test_the_runtime_requirements_are_what_the_server_imports_and_no_more():
    assert requirement_names("requirements-isnet-tiny.txt") == {"flask", "gunicorn", "onnxruntime", "openvino", "pillow",
                                                                 "pi-heif", "numpy", "prometheus-client", "redis",
                                                                 "rq"}
    assert requirement_names("requirements-tools.txt") == {"onnx", "requests", "psutil"}
    runtime = DOCKERFILE.rsplit("FROM ", 1)[1]
    assert "requirements-tools.txt" in DOCKERFILE.rsplit("FROM ", 1)[0] and "requirements-tools" not in runtime
    # the tools build the model in the build stage; the runtime stage copies the runtime package alone
    assert "COPY tools " in DOCKERFILE.rsplit("FROM ", 1)[0] and "tools" not in runtime


def test_the_server_imports_no_tooling(base_env):
    code = ("import sys, service.http.wsgi; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('onnx', 'requests', 'psutil', 'tools')); print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base_env, "BG_REMOVAL_MODEL": "u2netp"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.network
def test_pip_install_gives_a_bg_removal_command_with_its_data(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".models", ".git", "__pycache__", "eval-out"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    result = subprocess.run([str(site / "bin" / "bg-removal"), "--version"], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(site)}, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("bg-removal "), result.stderr
    assert (site / "service" / "templates" / "index.html").is_file()
    assert not (site / "tools").exists() and not (site / "service" / "tools").exists()  # the runtime alone


def kubernetes_documents(name: str = "bg-removal.yaml") -> list[dict]:
    import yaml

    return [d for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / name).read_text()) if d]


def test_kubernetes_manifests_validate_against_the_kubernetes_schemas():
    import kubernetes_validate

    documents = kubernetes_documents()
    assert [d["kind"] for d in documents] == ["Deployment", "Service", "ScaledObject"]
    for document in documents[:2]:
        kubernetes_validate.validate(document, "1.31.0", strict=True)  # raises on any unknown or wrong field


# KEDA's CRD schemas, compiled to validators by npm's @kubernetes-models/keda (MIT). A CRD's schema
# checks types, enums and required fields but lets unknown fields through (the API server prunes
# them), so the test below also reads the fields the scaler depends on.
KEDA_MODELS = "@kubernetes-models/keda@2.0.0"
KEDA_VALIDATE = """
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
const document = JSON.parse(process.argv[2]);
try { new ScaledObject(document).validate(); } catch (error) { console.error(error.message); process.exit(1); }
"""


@pytest.fixture(scope="module")
def keda_validator(tmp_path_factory):
    folder = npm_install(tmp_path_factory.mktemp("keda-models"), KEDA_MODELS)
    (folder / "validate.mjs").write_text(KEDA_VALIDATE)

    def validate(document: dict) -> subprocess.CompletedProcess:
        return subprocess.run(["node", "validate.mjs", json.dumps(document)], cwd=folder, capture_output=True,
                              text=True, timeout=60)
    return validate


def test_the_scaled_object_validates_against_kedas_schema_and_scales_the_deployment_on_its_backlog(
        keda_validator, u2netp_server):
    deployment, _, scaled = kubernetes_documents()
    checked = keda_validator(scaled)
    assert checked.returncode == 0, checked.stderr
    broken = {**scaled, "spec": {**scaled["spec"], "minReplicaCount": "one"}}
    assert "minReplicaCount must be integer" in keda_validator(broken).stderr  # the validator can fail
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"name": deployment["metadata"]["name"]}
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and float(trigger["metadata"]["threshold"]) >= 1
    query = trigger["metadata"]["query"]
    metric = re.search(r"\b(bg_\w+)\{app=\"bg-removal\"\}", query).group(1)
    assert metric == "bg_queue_requests" and f"\n{metric} " in u2netp_server.get("/metrics").text
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["app"] == "bg-removal"  # the label the query selects on
    annotations, (container,) = pod["metadata"]["annotations"], pod["spec"]["containers"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]


def test_kubernetes_deployment_runs_the_image_as_the_dockerfile_does_within_512_mi():
    deployment = kubernetes_documents()[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["memory"] == "512Mi" == container["resources"]["requests"]["memory"]
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/api/bg/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/bg/ready"
    env = {e["name"]: e["value"] for e in container["env"]}
    for name, value in MALLOC_DEFAULTS.items():
        assert env[name] == value
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    assert container["securityContext"]["readOnlyRootFilesystem"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/models/openvino-cache"} <= mounts  # the only places the server writes
    assert "mkdir /models/openvino-cache" in DOCKERFILE
    assert "useradd --create-home --uid 10001 app" in DOCKERFILE


def test_kubernetes_gives_a_stopping_pod_time_to_finish_what_it_admitted():
    from service.config import Settings
    from service.http.server import gunicorn_options

    pod = kubernetes_documents()[0]["spec"]["template"]["spec"]
    pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    settings = Settings.from_env({k: e["value"] for e in pod["containers"][0]["env"] for k in [e["name"]]})
    drain = gunicorn_options(settings)["graceful_timeout"]
    assert drain >= settings.request_timeout  # a request admitted just before SIGTERM may take its whole limit
    assert pod["terminationGracePeriodSeconds"] >= pause + drain


def test_the_job_manifests_validate_and_scale_workers_on_the_queue_length(keda_validator):
    import kubernetes_validate

    from service.jobs import QUEUE

    service, redis, workers, scaled = kubernetes_documents("bg-removal-jobs.yaml")
    assert [d["kind"] for d in (service, redis, workers, scaled)] == ["Service", "StatefulSet", "Deployment",
                                                                     "ScaledObject"]
    for document in (service, redis, workers):
        kubernetes_validate.validate(document, "1.31.0", strict=True)
    checked = keda_validator(scaled)
    assert checked.returncode == 0, checked.stderr
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == f"rq:queue:{QUEUE}"
    assert scaled["spec"]["scaleTargetRef"]["name"] == workers["metadata"]["name"]
    redis_address = f"{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    assert trigger["metadata"]["address"] == redis_address
    assert "--appendonly" in redis["spec"]["template"]["spec"]["containers"][0]["args"]

    (worker,) = workers["spec"]["template"]["spec"]["containers"]
    (server,) = kubernetes_documents()[0]["spec"]["template"]["spec"]["containers"]
    assert worker["command"] == ["python", "-m", "service", "worker"]
    worker_env = {e["name"]: e["value"] for e in worker["env"]}
    server_env = {e["name"]: e["value"] for e in server["env"]}
    assert worker_env["REDIS_URL"] == server_env["REDIS_URL"] == f"redis://{redis_address}/0"
    for name in ("BG_REMOVAL_MODEL", *MALLOC_DEFAULTS):
        assert worker_env[name] == server_env[name]
    assert worker["resources"]["limits"]["memory"] == "512Mi" and worker["image"] == server["image"]


@pytest.mark.network
def test_the_compose_file_validates_against_the_compose_specification(tmp_path):
    """compose.yaml against the Compose Specification's JSON schema as docker-compose 1.29.2's wheel
    (Apache-2.0, from PyPI) carries it, and the server, workers and Redis agree with each other."""
    import zipfile

    import yaml
    from jsonschema import Draft201909Validator

    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp_path),
                    "docker-compose==1.29.2"], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("docker_compose-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        schema = json.loads(archive.read("compose/config/compose_spec.json"))
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    Draft201909Validator(schema).validate(compose)
    broken = {**compose, "services": {**compose["services"], "worker": {"mem_limit": [512]}}}
    assert list(Draft201909Validator(schema).iter_errors(broken))  # the schema can fail
    server, worker, redis = (compose["services"][name] for name in ("server", "worker", "redis"))
    assert worker["image"] == server["image"] and worker["environment"] == server["environment"]
    assert worker["command"] == ["python", "-m", "service", "worker"]
    assert server["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert server["mem_limit"] == worker["mem_limit"] == "512m" and server["build"]["dockerfile"] == \
        "Dockerfile.isnet-tiny"
    assert "--appendonly" in redis["command"] and redis["volumes"] == ["redis-data:/data"]
