"""What pyproject.toml cannot express: protobuf generation and the mapped migrations package."""

import os
import sys

from setuptools import find_packages, setup


def _generate_proto() -> None:
    # Runs on every setup.py invocation (egg_info needs the packages to exist, not only
    # build_py); cheap, and grpcio-tools is a build requirement.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "scripts"))
    import gen_proto

    cwd = os.getcwd()
    os.chdir(here)
    try:
        gen_proto.generate()
    finally:
        os.chdir(cwd)


_generate_proto()
setup(
    packages=sorted(
        {
            *find_packages(include=["profile_service*"]),
            "profile_service.migrations",
            "profile_service.migrations.versions",
        }
    ),
    package_dir={"profile_service.migrations": "migrations"},
    package_data={
        "profile_service": ["py.typed"],
        # The public stubs: typed, with the descriptor set and the .proto files they came from.
        "profile_service.client": ["service_config.json"],
        "profile_service.v1": ["py.typed", "*.pyi", "*.binpb", "protos/**/*.proto"],
        "profile_service.migrations": ["*.mako"],
    },
)
