"""Run code as in a Modal image: imports of installed distributions the image does not list
(nor their requirements) fail, as they would in the container."""

from __future__ import annotations

import importlib.metadata as md
import sys

LOCAL = {"shared", "functions", "infra", "tests"}


def closure(specs: list[str]) -> set[str]:
    """The distributions `specs` install: themselves, their extras and requirements."""
    from packaging.requirements import Requirement

    todo = [Requirement(s) for s in specs]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        key = (name, tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            dep = Requirement(line)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e})
                                         for e in (req.extras or {""})):
                todo.append(dep)
    return {n for n, _ in seen}


class Blocker:
    """Wraps a meta path finder: it finds no top-level module of a distribution outside
    `allowed`, as if not installed (availability probes see None, imports fail)."""

    blocked: set[str] = set()  # what was asked for and hidden (for failure messages)

    def __init__(self, finder, allowed: set[str], owners: dict[str, set[str]]):
        self.finder, self.allowed, self.owners = finder, allowed, owners

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if not (top in sys.stdlib_module_names or top in LOCAL or top not in self.owners
                or self.owners[top] & self.allowed):
            Blocker.blocked.add(top)
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(fullname, path, target) if find else None

    def find_distributions(self, *args, **kwargs):
        """Package metadata stays visible (version checks read it; imports are what count)."""
        find = getattr(self.finder, "find_distributions", None)
        return find(*args, **kwargs) if find else iter(())

    def invalidate_caches(self):
        if hasattr(self.finder, "invalidate_caches"):
            self.finder.invalidate_caches()


def install(specs: list[str]) -> None:
    """From now on this process imports only what an image of `specs` (plus modal) holds."""
    allowed = closure([*specs, "modal"])
    owners = {mod: {d.lower().replace("_", "-") for d in dists}
              for mod, dists in md.packages_distributions().items()}
    sys.meta_path[:] = [Blocker(f, allowed, owners) for f in sys.meta_path]
