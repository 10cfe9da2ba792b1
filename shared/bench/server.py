"""Servers for the benchmark: the app in a thread, or `sdgate serve` as a child process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

import shared

HOST = "127.0.0.1"  # the benchmark never listens on or calls anything else


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextmanager
def in_thread(app, port: int):
    """Serve `app` with uvicorn on 127.0.0.1:port in a daemon thread; yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("benchmark server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


class Child:
    """`sdgate serve` in a child process, timed from the moment it is spawned."""

    def __init__(self, models_dir: Path, output_dir: Path, model: str | None = None,
                 device: str = "auto", env: dict | None = None):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = Path(output_dir) / f"serve-{self.port}.log"
        cmd = [sys.executable, "-m", "shared.cli", "serve", "--host", HOST,
               "--port", str(self.port), "--models-dir", str(models_dir),
               "--output-dir", str(output_dir), "--device", device, "--log-level", "warning"]
        if model:
            cmd += ["--model", model]
        # The child imports this same copy of sdgate, whatever the working directory.
        root = str(Path(shared.__file__).resolve().parent.parent)
        child_env = {**os.environ, "SDGATE_JOBS_DB": str(Path(output_dir) / "jobs.sqlite3"),
                     **(env or {}),
                     "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=child_env)

    def wait_ready(self, timeout: float = 600) -> float:
        """Poll /health until it answers; seconds since spawn."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sdgate serve exited with {self.proc.returncode}: "
                                   f"{self.log()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"sdgate serve was not ready after {timeout:.0f}s")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
