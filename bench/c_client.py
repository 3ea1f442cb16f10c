"""The C load generator (bench/h2_client.c): building it, and its command line.

It is the bench's client for calls that each need their own token (Upsert: a new user per
call), where h2load cannot be used. It is compiled on first use with the machine's C compiler
against libnghttp2 (Debian `libnghttp2-dev`, installed when missing and the bench is root, as
h2load is), into bench/build/. Without a compiler or the library, the bench falls back to the
Python client (bench/client.py), which costs about six times as much CPU per call.
"""

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "h2_client.c"
BINARY = Path(__file__).resolve().parent / "build" / "h2_client"
_HEADER = Path("/usr/include/nghttp2/nghttp2.h")


def build() -> tuple[str | None, str]:
    """The client's path (built now if missing or older than its source), or None and why."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return str(BINARY), "built before"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler"
    if not _HEADER.exists():
        return None, "libnghttp2's headers are missing (Debian: apt-get install libnghttp2-dev)"
    BINARY.parent.mkdir(exist_ok=True)
    done = subprocess.run(
        [compiler, "-O2", "-o", str(BINARY), str(SOURCE), "-lnghttp2"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None, f"compiling it failed: {done.stderr.strip()[-500:]}"
    return str(BINARY), "built"


def command(
    exe: str,
    port: int,
    method: str,
    body_file: Path,
    tokens_file: Path,
    concurrency: int,
    warmup: float,
    duration: float,
    timeout: float,
) -> list[str]:
    """The command running one closed-loop cell against 127.0.0.1:`port` (see h2_client.c)."""
    return [
        exe, "127.0.0.1", str(port), method, str(body_file), str(tokens_file),
        str(concurrency), str(warmup), str(duration), str(timeout),
    ]  # fmt: skip
