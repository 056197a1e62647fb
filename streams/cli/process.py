"""Run a segstream worker as a child process (demo, tests, benchmarks).

The worker gets its configuration only through ``SEGSTREAM_*`` variables,
exactly as a deployed worker would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import SegstreamError
from streams.settings import ENV_PREFIX


class WorkerStartError(SegstreamError):
    """A worker process exited or did not become ready in time."""


@dataclass
class WorkerProcess:
    """One ``segstream worker`` child process.

    Parameters
    ----------
    env
        Settings for the worker, as ``{"KAFKA_BOOTSTRAP": ...}`` without the
        ``SEGSTREAM_`` prefix. Requests to the worker carry ``WEB_TOKEN``.
    log_path
        File that receives the worker's stdout and stderr.
    """

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def web_port(self) -> int:
        return int(self.env["WEB_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> WorkerProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)} | {
            ENV_PREFIX + k: v for k, v in self.env.items()
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def web_token(self) -> str | None:
        """The bearer token the worker requires, if one is set."""
        return self.env.get("WEB_TOKEN") or None

    def request(self, path: str, method: str = "GET", timeout_s: float = 5.0) -> tuple[int, bytes]:
        """Send a request to this worker's web server, with its token: ``(status, body)``."""
        headers = {"Authorization": f"Bearer {self.web_token}"} if self.web_token else {}
        request = urllib.request.Request(self.url + path, method=method, headers=headers)  # noqa: S310 - loopback URL we built
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - loopback URL we built
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` from this worker's web server: ``(status, body)``."""
        return self.request(path, timeout_s=timeout_s)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Block until ``/readyz`` says ready, or raise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise WorkerStartError(f"worker exited; last log lines:\n{self.tail_log()}")
            with contextlib.suppress(OSError):
                status, _ = self.get("/readyz", timeout_s=2.0)
                if status == 200:
                    return
            time.sleep(0.3)
        raise WorkerStartError(f"worker not ready in {timeout_s:.0f}s:\n{self.tail_log()}")

    def tail_log(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker: a crash, with no chance to commit or flush."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful stop (SIGTERM); SIGKILL after ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
