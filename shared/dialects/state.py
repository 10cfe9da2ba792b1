"""Per-dialect state (A1111 options, ModelsLab's spam filter window), in one declared place.

Namespaced, per owner (API key id). This one lives in the server's memory; on Modal the shared
state store of the topology work backs the same interface so every web container agrees.
"""

from __future__ import annotations

import threading


class DialectState:
    """`namespace(name, owner)` -> that owner's mutable dict for one dialect feature."""

    def __init__(self):
        self._data: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()

    def namespace(self, name: str, owner: str) -> dict:
        with self._lock:
            return self._data.setdefault((name, owner), {})
