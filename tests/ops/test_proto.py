"""The proto file: buf lint clean, and the generated code current."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUF = Path(sys.executable).parent / "buf"  # buf-bin, from the dev extra


def test_protos_pass_buf_lint() -> None:
    assert BUF.exists(), "buf is missing: `make test` installs it (buf-bin)"
    result = subprocess.run(
        [str(BUF), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_matches_the_proto() -> None:
    from profile_service.v1 import profile_service_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["ProfileService"]
    assert service.full_name == "profile.v1.ProfileService"
    source = (ROOT / "protos/profile/v1/profile_service.proto").read_text()
    # The RPCs, in the proto's order (the list is the proto's own, not written again here).
    assert [m.name for m in service.methods] == re.findall(r"^\s*rpc (\w+)\(", source, re.M)
    for field in pb.Profile.DESCRIPTOR.fields:
        assert f" {field.name} = {field.number};" in source


def test_the_api_stays_wire_compatible_with_v1_0() -> None:
    """v1.0's descriptor is kept as the baseline (protos/baseline-v1.0.binpb, built by
    `buf build -o` from the v1.0 proto); every later change must pass `buf breaking` on it."""
    assert BUF.exists(), "buf is missing: `make test` installs it (buf-bin)"
    result = subprocess.run(
        [str(BUF), "breaking", "--against", "protos/baseline-v1.0.binpb"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
