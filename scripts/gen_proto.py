"""Generate the Python protobuf/gRPC code and type stubs into profile_service/_proto/."""

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_FILES = ["profile/v1/profile_service.proto"]
# The proto package `profile.v1` would generate `from profile.v1 import ...`, which clashes with
# Python's stdlib `profile` module. Mapping the include root to profile_service/_proto keeps the
# proto package name (and so every RPC path) while the Python modules live inside our package.
_MAPPED_ROOT = "profile_service/_proto"


def generate(with_stubs: bool = True) -> None:
    """Run protoc for every file in PROTO_FILES; raise on failure."""
    out = ROOT / _MAPPED_ROOT
    for package_dir in {out / Path(f).parent for f in PROTO_FILES} | {out, out / "profile"}:
        package_dir.mkdir(parents=True, exist_ok=True)
        (package_dir / "__init__.py").touch()
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{_MAPPED_ROOT}=protos",
        f"-I{well_known}",
        "--python_out=.",
        "--grpc_python_out=.",
        # With source info, so reflection can hand the comments to `grpcurl describe`.
        "--include_source_info",
        f"--descriptor_set_out={_MAPPED_ROOT}/profile_service.binpb",
    ]
    if with_stubs:
        args += ["--mypy_out=.", "--mypy_grpc_out=."]
    args += [f"{_MAPPED_ROOT}/{f}" for f in PROTO_FILES]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    import os

    os.chdir(ROOT)
    generate(with_stubs="--no-stubs" not in sys.argv)
