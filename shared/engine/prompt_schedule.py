"""A1111 prompt editing and alternation: `[from:to:when]`, `[to:when]`, `[from::when]`, `[a|b]`.

The grammar and step rules are upstream's `modules/prompt_parser.py`
(get_learned_conditioning_prompt_schedules, v1.10, new-style scheduling): `when` with a dot is
a fraction of the steps, without one a step number; alternation switches every step. A prompt
the grammar cannot parse is used as it is, as upstream does. Pure: no torch.
"""

from __future__ import annotations

from functools import lru_cache

import lark

_GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""
_PARSER = lark.Lark(_GRAMMAR)

Schedule = list[tuple[int, str]]  # (last step this text is used at, 0-based as upstream, text)


def _collect_steps(steps: int, tree) -> list[int]:
    res = [steps]

    class CollectSteps(lark.Visitor):
        def scheduled(self, tree):
            s = tree.children[-2]
            v = float(s)
            v = (v - int(v)) * steps if "." in s else int(v)
            tree.children[-2] = min(steps, int(v))
            if tree.children[-2] >= 1:
                res.append(tree.children[-2])

        def alternate(self, tree):
            res.extend(range(1, steps + 1))

    CollectSteps().visit(tree)
    return sorted(set(res))


def _at_step(step: int, tree) -> str:
    class AtStep(lark.Transformer):
        def scheduled(self, args):
            before, after, _, when, _ = args
            yield before or () if step <= when else after

        def alternate(self, args):
            args = ["" if not arg else arg for arg in args]
            yield args[(step - 1) % len(args)]

        def start(self, args):
            def flatten(x):
                if isinstance(x, str):
                    yield x
                else:
                    for gen in x:
                        yield from flatten(gen)
            return "".join(flatten(args))

        def plain(self, args):
            yield args[0].value

        def __default__(self, data, children, meta):
            for child in children:
                yield child

    return AtStep().transform(tree)


@lru_cache(maxsize=256)
def _schedule(prompt: str, steps: int) -> tuple[tuple[int, str], ...]:
    try:
        tree = _PARSER.parse(prompt)
    except lark.exceptions.LarkError:
        return ((steps, prompt),)
    return tuple((t, _at_step(t, tree)) for t in _collect_steps(steps, tree))


def schedule(prompt: str, steps: int) -> Schedule:
    """[(end_step, text)]: text is used while the 0-based step index <= end_step.

    >>> schedule("a [cat:dog:0.5]", 10)
    [(5, 'a cat'), (10, 'a dog')]
    """
    if "[" not in prompt:  # fast path: nothing to schedule
        return [(steps, prompt)]
    return list(_schedule(prompt, max(int(steps), 1)))


def text_at(sched: Schedule, step: int) -> str:
    """The text a schedule uses at 0-based step `step` (upstream reconstruct_cond_batch)."""
    for end, text in sched:
        if step <= end:
            return text
    return sched[-1][1]


def merged(pos: Schedule, neg: Schedule) -> list[tuple[int, str, str]]:
    """Both prompts' schedules on one step axis: [(end_step, prompt, negative)]."""
    ends = sorted({e for e, _ in pos} | {e for e, _ in neg})
    return [(e, text_at(pos, e), text_at(neg, e)) for e in ends]
