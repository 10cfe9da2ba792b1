"""Test helpers: real HTTP servers on 127.0.0.1 (webhook receiver, image host, canary), images."""

from __future__ import annotations

import base64
import io
import select
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image



@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every request; answers with `statuses` in turn (then 200), or holds until released."""

    url: str
    hits: list[Hit] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    hold: threading.Event | None = None  # set: answer; unset: keep the client waiting
    got: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, n: int, timeout: float = 60) -> list[Hit]:
        """Block until at least n requests arrived (or timeout); returns them."""
        with self.got:
            self.got.wait_for(lambda: len(self.hits) >= n, timeout)
            return list(self.hits)


@contextmanager
def receiver(**kw):
    """A threaded HTTP server on a free port; yields its Receiver."""
    rec = Receiver(url="", **kw)

    class Handler(BaseHTTPRequestHandler):
        def _handle(self):
            length = int(self.headers.get("content-length") or 0)
            hit = Hit(self.path, {k.lower(): v for k, v in self.headers.items()},
                      self.rfile.read(length))
            with rec.got:
                rec.hits.append(hit)
                rec.got.notify_all()
            if rec.hold is not None:
                rec.hold.wait(120)
            if self.path in rec.routes:
                status, headers, body = rec.routes[self.path]
            else:
                status = rec.statuses.pop(0) if rec.statuses else 200
                headers, body = {}, b"ok"
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _handle

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        if rec.hold is not None:
            rec.hold.set()
        server.shutdown()
        server.server_close()


@contextmanager
def canary():
    """A listening socket nobody should connect to; yields (port, touched() -> bool)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)

    def touched() -> bool:
        # A completed TCP handshake makes a listening socket readable, accepted or not.
        return bool(select.select([sock], [], [], 0.2)[0])

    try:
        yield sock.getsockname()[1], touched
    finally:
        sock.close()


# -- ModelsLab request helpers ---------------------------------------------------------------
SMALL = {"width": "64", "height": "64", "num_inference_steps": "2", "enhance_prompt": "no"}


def png(size=(64, 64), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def b64png(**kw) -> str:
    return base64.b64encode(png(**kw)).decode()


def fetch_png(client, url) -> Image.Image:
    r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(r.content))


def poll(client, url: str, body: dict | None = None, tries: int = 600) -> dict:
    """Fetch until the job is no longer processing."""
    for _ in range(tries):
        out = client.post(url, json=body or {}).json()
        if out["status"] != "processing":
            return out
        time.sleep(0.1)
    raise AssertionError("job still processing")


def wait_healthy(proc, base: str, tries: int = 1200) -> None:
    """Wait until the server process `proc` answers /health at `base` (its output if it dies)."""
    import time

    import httpx

    for _ in range(tries):
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode(errors="replace"))
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{base} never became healthy")
