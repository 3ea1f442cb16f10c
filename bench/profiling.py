"""Where the real server's Python time goes: py-spy samples of the thread holding the GIL.

`--gil` keeps only the thread that holds the GIL, i.e. the Python work that competes for the one
interpreter; `--nonblocking` samples without stopping the process, so the server keeps most of
its speed (blocking sampling, or `--native`, stalls it). py-spy runs on any CPU and costs some:
the load while profiling is not a measurement.
"""

import collections
import shutil
import sys
from pathlib import Path

# Frames every thread has; they say nothing about where the time goes.
_GENERIC = ("threading.py", "concurrent/futures/thread.py", "<frozen runpy>")


def find_py_spy() -> str | None:
    """py-spy from the virtualenv or PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record_command(spy: str, pid: int, seconds: float, raw: Path) -> list[str]:
    """The py-spy command writing collapsed stacks ("frame;frame;... count") to `raw`."""
    return [
        spy, "record", "--pid", str(pid), "--gil", "--nonblocking", "--rate", "500",
        "--duration", str(max(1, round(seconds))), "--format", "raw", "--output", str(raw),
    ]  # fmt: skip


def summarize(raw: Path, top: int = 25) -> str:
    """The frames with the most samples under them (inclusive) and at the top (self)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            if not any(generic in frame for generic in _GENERIC):
                inclusive[frame] += n
    if total == 0:
        return "    (no samples)\n"
    lines = [f"    {total} samples holding the GIL; inclusive share (frame and what it calls):"]
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    lines.append("    self share (the frame itself):")
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in own.most_common(top // 2)]
    return "\n".join(lines) + "\n"
