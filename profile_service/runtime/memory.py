"""Hands the heap memory the process freed back to the operating system, every TRIM_SECONDS.

glibc keeps freed memory in its heaps for reuse, so a worker's RSS ratchets up to its highest
point and stays there: after a flood of unfinished requests (or a burst of large ones) a pod
would sit near its memory limit for good. glibc's malloc_trim(0) returns the free pages
(bench/README.md, "Transport hardening", for the figures). No maintained library wraps it;
it is one call through ctypes, made in a worker thread (it takes the allocator's locks, and the
event loop must not wait on them). Without glibc (musl, macOS) it does nothing.
"""

import asyncio
import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_SECONDS = 10.0


def _malloc_trim() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim  # a ctypes.CDLL call releases the GIL
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Calls malloc_trim every `seconds` in a worker thread, until stop()."""

    def __init__(self, seconds: float = TRIM_SECONDS) -> None:
        self._seconds = seconds
        self._trim = _malloc_trim()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin trimming on the running loop (nothing to do without glibc)."""
        if self._trim is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(self._trim))

    async def stop(self) -> None:
        """Stop trimming."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, trim: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(self._seconds)
            await asyncio.to_thread(trim)
