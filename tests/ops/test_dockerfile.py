"""The Dockerfile: hadolint, a pinned slim base, a lean final stage, a non-root user."""

import json
import re
import shlex
import subprocess
from pathlib import Path

from profile_service.runtime.cli import build_parser
from tests.ops.conftest import (
    DOCKERFILE,
    DOCKERIGNORE,
    REPO_ROOT,
    Resource,
    container_port,
    dockerfile_instructions,
    hadolint_binary,
    stage_instructions,
)

_PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install requests\n", encoding="utf-8")
    result = _hadolint(careless)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the `latest` tag
    assert "DL3042" in result.stdout  # the pip cache


def test_both_stages_use_one_base_image_pinned_to_a_patch_release() -> None:
    bases = [i.arguments.split()[0] for i in dockerfile_instructions() if i.keyword == "FROM"]
    assert len(bases) == 2, bases
    # The virtualenv copied from the builder links to the interpreter of the base image.
    assert bases[0] == bases[1]
    assert _PINNED_BASE.match(bases[0]), bases[0]


def test_the_builder_installs_the_project_into_a_virtualenv_without_a_pip_cache() -> None:
    runs = [i.arguments for i in stage_instructions(0) if i.keyword == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs, runs
    for command in installs:
        assert "--no-cache-dir" in command
        assert "/opt/venv/bin/pip install" in command
        assert "-e " not in command and "--editable" not in command


def test_the_final_stage_takes_only_the_virtualenv_from_the_builder() -> None:
    final = stage_instructions(-1)
    copies = [i.arguments for i in final if i.keyword in ("COPY", "ADD")]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    for run in (i.arguments for i in final if i.keyword == "RUN"):
        # No package installs (and so no compilers or caches) in the final stage.
        assert not re.search(r"\b(pip|apt-get|apt|gcc|cc|make)\b", run), run


def test_the_image_runs_profile_service_serve_as_a_numeric_non_root_user() -> None:
    final = stage_instructions(-1)
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[0]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[0]

    (entrypoint,) = [json.loads(i.arguments) for i in final if i.keyword == "ENTRYPOINT"]
    (cmd,) = [json.loads(i.arguments) for i in final if i.keyword == "CMD"]
    assert entrypoint == ["profile-service"]
    assert build_parser().parse_args(cmd).command == "serve"


def test_the_image_exposes_the_grpc_and_metrics_ports_the_deployment_uses(
    server: Resource,
) -> None:
    exposed = {
        int(port.split("/")[0])
        for i in stage_instructions(-1)
        if i.keyword == "EXPOSE"
        for port in i.arguments.split()
    }
    assert exposed == {container_port(server, "grpc"), container_port(server, "metrics")}


def test_the_pods_run_as_the_images_user(deployment: Resource) -> None:
    (user,) = [i.arguments for i in stage_instructions(-1) if i.keyword == "USER"]
    uid, _, gid = user.partition(":")
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsUser"] == int(uid)
    assert pod["runAsGroup"] == int(gid or uid)


def test_dockerignore_lets_in_exactly_what_the_builder_copies() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Everything is excluded first, then only the build's inputs are let back in.
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for i in stage_instructions(0):
        if i.keyword == "COPY" and not i.arguments.startswith("--from"):
            *sources, _destination = shlex.split(i.arguments)
            copied |= {s.rstrip("/") for s in sources}
    assert copied == allowed
    for source in copied:
        assert (REPO_ROOT / source).exists(), source
    # Generated code is rebuilt inside the image, never taken from a work tree.
    assert "profile_service/v1/" in lines
