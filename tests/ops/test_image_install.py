"""The Dockerfile's install step works: its own RUN commands, in a fresh virtualenv (slow)."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.ops.conftest import REPO_ROOT, Instruction, build_context, stage_instructions

# The builder's absolute paths, and where this test puts them instead.
_VENV = "/opt/venv"
_SRC = re.compile(r"(?<![\w./-])/src(?=[/\s'\[]|$)")


def _copy(instruction: Instruction, context: list[str], workdir: Path) -> None:
    """Carry out one `COPY src... dest` from the build context."""
    *sources, destination = shlex.split(instruction.arguments)
    target = workdir / destination
    for source in sources:
        if source.rstrip("/") in context:  # a file
            dest = target / source if destination.endswith("/") else target
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / source, dest)
            continue
        prefix = source.rstrip("/") + "/"
        inside = [p for p in context if p.startswith(prefix)]
        assert inside, f"COPY {source}: nothing in the build context"
        for path in inside:
            dest = target / path[len(prefix) :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / path, dest)


def test_the_images_install_step_produces_a_working_profile_service(tmp_path: Path) -> None:
    venv, src = tmp_path / "venv", tmp_path / "src"
    context = build_context()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    # `python` in the Dockerfile is the base image's; here, this interpreter's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    workdir = tmp_path
    ran = []
    for instruction in stage_instructions(0):
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                key, _, value = pair.partition("=")
                env[key] = value
        elif instruction.keyword == "WORKDIR":
            workdir = Path(_SRC.sub(str(src), instruction.arguments))
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            _copy(instruction, context, workdir)
        elif instruction.keyword == "RUN":
            command = _SRC.sub(str(src), instruction.arguments.replace(_VENV, str(venv)))
            result = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            assert result.returncode == 0, f"RUN {command}\n{result.stdout}\n{result.stderr}"
            ran.append(command)
    assert any("pip install" in command for command in ran), ran
    assert workdir == src

    cli = venv / "bin" / "profile-service"
    help_text = subprocess.run(
        [str(cli), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout
    for command in ("serve", "migrate", "purge", "token"):
        assert command in help_text

    # The installed package, not the work tree, with its generated code and migrations;
    # grpcio-tools was a build requirement only.
    probe = (
        "import importlib.resources, importlib.util, profile_service;"
        "from profile_service.v1 import profile_service_pb2_grpc;"
        "print(profile_service.__file__);"
        "print(sorted(p.name for p in importlib.resources.files("
        "'profile_service.migrations').joinpath('versions').iterdir()));"
        "print(importlib.util.find_spec('grpc_tools'))"
    )
    lines = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert Path(lines[0]).is_relative_to(venv)
    assert "0001_profiles_with_rls.py" in lines[1]
    assert lines[2] == "None"
    # Nothing of the development set-up ships: not its module, not its secret.
    installed = [p for p in venv.rglob("*.py") if "profile_service" in p.parts]
    assert installed
    assert not [p for p in installed if "dev-only-secret" in p.read_text(errors="replace")]
    assert not [p for p in venv.rglob("devtools")]
