"""Installing the bench's Debian packages (h2load, the nghttp2 headers) when they are missing."""

import os
import shutil
import subprocess


def apt_install(*packages: str) -> bool:
    """`apt-get install` the packages (as root, with apt-get); True if that worked."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", *packages],
    ):
        if subprocess.run(command, env=env, check=False).returncode != 0:
            return False
    return True
