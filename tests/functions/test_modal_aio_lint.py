"""Lint: no modal.Dict / modal.Queue / FunctionCall method is called without `.aio` from async
code (a blocking call there stalls a web container's event loop for every request it serves).

Static: every `async def` in shared/ and functions/ is scanned for calls of those objects'
methods. At run time, tests/api/test_modal_state.py runs the app on stand-ins that raise on any
blocking call made under an event loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"get", "put", "pop", "contains", "len", "keys", "values", "items", "update", "clear",
           "get_many", "put_many", "spawn", "remote", "cancel", "from_id"}
# names that hold a modal.Dict / modal.Queue (or a FunctionCall) in this code base
HOLDERS = {"state_dict", "state_queue", "mapping", "queue", "jobs_dict", "FunctionCall"}


def holder(node: ast.AST) -> str | None:
    """The modal holder an expression is rooted at (`self.mapping`, `state_dict`, `modal.Dict`)."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        if isinstance(node, ast.Attribute) and node.attr in HOLDERS:
            return node.attr
        if isinstance(node, ast.Attribute) and node.attr in ("Dict", "Queue"):
            return node.attr
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) and node.id in HOLDERS else None


def offences(source: str, filename: str) -> list[str]:
    found = []
    for fn in ast.walk(ast.parse(source, filename)):
        if not isinstance(fn, ast.AsyncFunctionDef):
            continue
        for call in ast.walk(fn):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                continue
            method = call.func
            if method.attr in METHODS and holder(method.value):
                if method.attr in ("from_id",):  # a constructor, not a round trip
                    continue
                found.append(f"{filename}:{call.lineno}: {ast.unparse(call.func)}(...) "
                             "without .aio in async code")
    return found


def test_no_blocking_modal_primitive_call_in_async_code():
    bad = []
    for path in sorted([*ROOT.glob("shared/**/*.py"), *ROOT.glob("functions/*.py")]):
        bad += offences(path.read_text(), str(path.relative_to(ROOT)))
    assert bad == []


def test_the_lint_catches_what_it_should():
    src = '''
async def a(self):
    self.mapping.get("k")                 # caught
    await self.mapping.get.aio("k")       # fine
    await self.queue.put.aio(1)           # fine
    state_queue.len()                     # caught
    modal.Dict.from_name("x").put("k", 1)  # caught
    await modal.FunctionCall.from_id(h).cancel.aio()  # fine
    modal.FunctionCall.from_id(h).get(timeout=1)     # caught

def b(self):
    self.mapping.get("k")                 # blocking is fine outside async code
'''
    assert [line.split(":")[1] for line in offences(src, "x.py")] == ["3", "6", "7", "9"]
