"""Every manifest validates offline against the Kubernetes schemas kubernetes-validate ships."""

import copy
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.ops.conftest import (
    EXAMPLE_SECRET,
    K8S_DIR,
    KUBERNETES_VERSION,
    REPO_ROOT,
    Resource,
    containers,
    kustomization_files,
    load_yaml,
    manifest_files,
    pod_templates,
)


def _validate(resource: Resource) -> None:
    # strict: unknown fields (a misspelt key) are errors, not silently ignored.
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S_DIR)))
def test_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    resources = load_yaml(path)
    assert resources, f"{path} holds no resource"
    for resource in resources:
        _validate(resource)


def test_schema_validation_rejects_a_broken_deployment() -> None:
    (deployment,) = load_yaml(K8S_DIR / "deployment.yaml")
    misspelt = copy.deepcopy(deployment)
    container = misspelt["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(misspelt)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(wrong_type)


def test_schema_validation_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("schema validation tried to use the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for path in manifest_files():
        for resource in load_yaml(path):
            _validate(resource)


def test_every_manifest_is_in_a_kustomization_except_the_example_secret() -> None:
    listed: set[Path] = set()
    for kustomization in kustomization_files():
        (spec,) = load_yaml(kustomization)
        assert spec["kind"] == "Kustomization"
        for entry in spec["resources"]:
            path = (kustomization.parent / entry).resolve()
            assert path.is_file(), f"{kustomization}: {entry} does not exist"
            # kustomize refuses files outside the kustomization's own directory.
            assert kustomization.parent in path.parents
            listed.add(path)
    # Listing the example would overwrite the real Secrets on every `kubectl apply -k`.
    assert EXAMPLE_SECRET not in listed
    assert listed == set(manifest_files()) - {EXAMPLE_SECRET}


def test_every_kustomization_deploys_one_release_into_one_namespace() -> None:
    specs = [load_yaml(k)[0] for k in kustomization_files()]
    # The application, the migration applied before it, and the re-encryption run on demand.
    assert len(specs) == 3
    assert len({s["namespace"] for s in specs}) == 1
    assert all(s["images"] == specs[0]["images"] for s in specs)
    (image,) = specs[0]["images"]
    # Every container runs the image the kustomizations replace, so none is left behind.
    for workload, template in pod_templates():
        for container in containers(template):
            name = container["image"].rsplit(":", 1)[0]
            assert name == image["name"], f"{workload}: {container['image']}"


# A developer's machine may lack kubectl; CI's must not silently skip this check.
@pytest.mark.skipif(
    shutil.which("kubectl") is None and not os.environ.get("CI"),
    reason="kubectl (kustomize) not installed",
)
@pytest.mark.parametrize(
    "kustomization", kustomization_files(), ids=lambda p: str(p.parent.relative_to(REPO_ROOT))
)
def test_kustomize_builds_resources_that_validate(kustomization: Path) -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(kustomization.parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (spec,) = load_yaml(kustomization)
    (image,) = spec["images"]
    resources = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert len(resources) == len(spec["resources"])
    for resource in resources:
        assert resource["metadata"]["namespace"] == spec["namespace"]
        _validate(resource)
    assert f"image: {image['newName']}:{image['newTag']}" in built.stdout
