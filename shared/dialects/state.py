"""Per-dialect state (A1111 options, ModelsLab's spam filter window), in one declared place.

Namespaced, per owner (API key id), in the cross-container state store (shared/state.py), so
every web container (and the split local topology) agrees on each key's options.
"""

from __future__ import annotations

from shared.state import MemoryState, State


class DialectState:
    """`namespace(name, owner)` -> a copy of that owner's dict for one dialect feature;
    `save` / `asave` merge updates into it."""

    def __init__(self, state: State | None = None):
        self.state = state or MemoryState()

    @staticmethod
    def _key(name: str, owner: str) -> str:
        return f"dialect:{name}:{owner}"

    def namespace(self, name: str, owner: str) -> dict:
        """Blocking read (sync routes and dependencies run in worker threads)."""
        return dict(self.state.get(self._key(name, owner)) or {})

    def save(self, name: str, owner: str, updates: dict) -> dict:
        merged = {**self.namespace(name, owner), **updates}
        self.state.put(self._key(name, owner), merged)
        return merged

    async def asave(self, name: str, owner: str, updates: dict) -> dict:
        merged = {**(await self.state.aget(self._key(name, owner)) or {}), **updates}
        await self.state.aput(self._key(name, owner), merged)
        return merged
