"""A consumer's install: the project without extras is the client only, typed (slow)."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from grpc_tools import protoc

from profile_service.v1 import PROTO_INCLUDE
from profile_service.v1 import profile_service_pb2 as pb
from tests.ops.conftest import REPO_ROOT, build_context

# What the server brings and a consumer must not get (PEP 503 names).
_SERVER_ONLY = {"psycopg", "psycopg-binary", "psycopg-pool", "sqlalchemy", "alembic",
                "prometheus-client", "grpcio-health-checking", "grpcio-reflection", "pyjwt",
                "cryptography", "opentelemetry-api", "opentelemetry-sdk"}  # fmt: skip
# The consumer of the issue (ten lines, and their asyncio twin), checked with mypy --strict.
_CONSUMER = """\
from profile_service.client import AsyncProfileClient, NotFound, ProfileClient
from profile_service.v1 import profile_service_pb2 as pb


def age_of(client: ProfileClient, owner_id: str) -> int | None:
    try:
        profile: pb.Profile = client.get(owner_id, timeout=2.0)
    except NotFound:
        return None
    return profile.age if profile.HasField("age") else None


async def goal_of(client: AsyncProfileClient) -> str:
    return (await client.get()).primary_goal
"""


def _dev_version(name: str) -> str:
    """The dev extra's pin of `name`, so the consumer is checked with the tools we use."""
    text = (REPO_ROOT / "pyproject.toml").read_text()
    found = re.search(rf'"({re.escape(name)}[~=<>][^"]*)"', text)
    assert found, name
    return found.group(1)


def _run(*args: str | Path, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_a_plain_install_is_a_typed_client_without_the_server(tmp_path: Path) -> None:
    src, venv = tmp_path / "src", tmp_path / "venv"
    for path in build_context():
        if path.split("/")[0] in {"tests", "bench", "deploy", "docs", "devtools", ".ci"}:
            continue
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / path, src / path)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", src, cwd=tmp_path, env=env)

    listed = _run(python, "-m", "pip", "list", "--format=freeze", cwd=tmp_path, env=env)
    installed = {line.split("==")[0].lower().replace("_", "-") for line in listed.splitlines()}
    assert "profile-service" in installed
    assert not installed & _SERVER_ONLY, installed & _SERVER_ONLY
    imported = _run(
        python,
        "-c",
        "import profile_service.client, profile_service.v1 as v1;"
        "print((v1.PROTO_INCLUDE / 'profile/v1/profile_service.proto').is_file())",
        cwd=tmp_path,
        env=env,
    )
    assert imported.strip() == "True"
    # The command is there, and says what the server needs rather than failing on an import.
    serve = subprocess.run(
        [str(venv / "bin" / "profile-service"), "serve"],
        cwd=tmp_path,
        env={**env, "DATABASE_URL": "postgresql://x/y", "JWT_SECRET": "s" * 32},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode == 2
    assert "pip install 'profile-service[server]'" in serve.stderr

    # A consumer type-checks with the stubs the package ships (.pyi and py.typed).
    (tmp_path / "consumer.py").write_text(_CONSUMER)
    tools = [_dev_version(n) for n in ("mypy", "types-grpcio")] + ["types-protobuf"]
    _run(python, "-m", "pip", "install", "--quiet", *tools, cwd=tmp_path, env=env)
    _run(python, "-m", "mypy", "--strict", "consumer.py", cwd=tmp_path, env=env)


def test_stubs_a_consumer_generates_from_the_shipped_proto_load_beside_ours(
    tmp_path: Path,
) -> None:
    well_known = Path(protoc.__file__).parent / "_proto"
    proto = "profile/v1/profile_service.proto"
    code = protoc.main(
        ["protoc", f"-I{PROTO_INCLUDE}", f"-I{well_known}", f"--python_out={tmp_path}", proto]
    )
    assert code == 0
    # Under another module name: `profile` would be the standard library's profiler.
    spec = importlib.util.spec_from_file_location(
        "consumer_profile_pb2", tmp_path / "profile" / "v1" / "profile_service_pb2.py"
    )
    assert spec is not None and spec.loader is not None
    theirs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(theirs)  # a duplicate symbol would raise TypeError here

    ours = pb.Profile(age=30, available_equipment=["barbell"])
    assert theirs.Profile.FromString(ours.SerializeToString()).age == 30
    assert theirs.DESCRIPTOR is pb.DESCRIPTOR  # one descriptor, registered once
