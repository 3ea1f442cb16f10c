"""The load generators that need a token per call, run as child processes: the Python client
(bench/client.py) and the C one (bench/h2_client.c). Each prints measure-start/-end marks, then
its result as JSON."""

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from bench import c_client, payloads, procs
from bench.targets import JWT_SECRET


class Clients:
    """Runs the clients on `cpus`, with their files in `tmp`."""

    def __init__(self, processes: procs.Processes, cpus: str, tmp: Path) -> None:
        self.processes = processes
        self._cpus = cpus
        self.tmp = tmp

    def python(
        self,
        port: int,
        rpc: str,
        concurrency: int,
        *,
        warmup: float = 0.0,
        duration: float = 0.0,
        calls: int = 0,
        tokens_file: str = "",
        mint: int = 0,
        meter: procs.Meter | None = None,
    ) -> dict[str, Any]:
        spec = {
            "target": f"127.0.0.1:{port}",
            "rpc": rpc,
            "concurrency": concurrency,
            "warmup": warmup,
            "duration": duration,
            "calls": calls,
            "tokens_file": tokens_file,
            "mint": mint,
        }
        spec_path = self.tmp / "client-spec.json"
        spec_path.write_text(json.dumps(spec))
        return self._run(
            [sys.executable, "-m", "bench.client", str(spec_path)],
            120 + warmup + duration + mint / 5000,
            meter,
            # It mints its own tokens (the C client reads them from a file).
            env={"BENCH_JWT_SECRET": JWT_SECRET},
        )

    def c(
        self,
        executable: str,
        port: int,
        rpc: str,
        concurrency: int,
        mint: int,
        warmup: float,
        duration: float,
        meter: procs.Meter,
    ) -> dict[str, Any]:
        """A timed cell of the C client, each call with a new user's token."""
        tokens_file = self.tmp / "c-client-tokens.txt"
        tokens_file.write_text("\n".join(payloads.new_user_tokens(JWT_SECRET, mint)) + "\n")
        body_file = self.tmp / f"{rpc}-request.bin"
        body_file.write_bytes(payloads.grpc_frame(payloads.REQUESTS[rpc]()))
        command = c_client.command(
            executable,
            port,
            payloads.METHODS[rpc],
            body_file,
            tokens_file,
            concurrency,
            warmup,
            duration,
            payloads.CALL_TIMEOUT_SECONDS,
        )
        return self._run(command, 120 + warmup + duration, meter)

    def _run(
        self,
        command: list[str],
        limit: float,
        meter: procs.Meter | None,
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Run a load generator that prints measure-start/-end marks, then its result as JSON."""
        client = self.processes.start(
            command,
            cpus=self._cpus,
            env={**os.environ, **(env or {})},
            capture=True,
        )
        # A watchdog: a client that hangs is stopped, which ends the reading below.
        watchdog = threading.Timer(limit, lambda: self.processes.stop(client, grace=1))
        watchdog.start()
        lines = []
        usage: dict[str, Any] = {}
        try:
            assert client.stdout is not None
            for raw in client.stdout:
                line = raw.decode(errors="replace").strip()
                if line == "measure-start" and meter is not None:
                    meter.start()
                elif line == "measure-end" and meter is not None:
                    usage = meter.stop()
                elif line:
                    lines.append(line)
            client.wait()
        finally:
            watchdog.cancel()
        self.processes.forget(client)
        if client.returncode != 0 or not lines:
            text = "\n".join(lines)[-3000:]
            raise RuntimeError(f"the load generator failed ({client.returncode}):\n{text}")
        result: dict[str, Any] = json.loads(lines[-1])
        return {**result, **usage}
