"""Token merging for Stable Diffusion (ToMe, Bolya & Hoffman 2023; the `tomesd` package's
algorithm, which A1111 applies for its token_merging_ratio options), for one pipeline call.

Before each self-attention (`attn1`) of a UNet's transformer blocks at the highest resolutions
(downsample <= `max_downsample`), the block's tokens are split on a stride grid: one destination
token per sy x sx cell (its top-left, or a random one), the others sources. The `r = N * ratio`
sources most similar (cosine) to a destination are averaged into it, attention runs on the
N - r tokens left, and its output is copied back to all N positions (a merged source gets its
destination's output). Fewer tokens, a different picture: off unless a request asks.

Written here because `tomesd` patches diffusers classes that diffusers 0.42 no longer has. It is
installed as attention-processor wrappers and hooks for the call only and removed after, so the
next request draws the untouched model. Two deliberate differences from `tomesd`: random
destinations come from each image's own seed (tomesd: one unseeded generator for the batch), so
an image is reproducible and the same alone or in a batch; and its sorts are stable, so ties
break the same way on every device.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

MAX_DOWNSAMPLE = 1  # tomesd's and A1111's: only the full-resolution blocks merge
STRIDE = (2, 2)  # (sx, sy): one destination per 2x2 cell, as tomesd's default


def _identity(x):
    return x


def bipartite_soft_matching_random2d(metric, w: int, h: int, sx: int, sy: int, r: int,
                                     generators=None):
    """(merge, unmerge) for tokens `metric` (B, N, C) laid out on an h x w grid.

    `generators`: None puts each cell's destination at its top-left; else one torch.Generator
    per image, row b of the batch using image b % len(generators)'s draw (classifier-free
    guidance stacks [uncond, cond]: both halves of an image share its partition)."""
    import torch

    B, N, _ = metric.shape
    if r <= 0:
        return _identity, _identity
    with torch.no_grad():
        hsy, wsx = h // sy, w // sx
        num_dst = hsy * wsx
        if generators:
            rand = torch.stack([torch.randint(sy * sx, (hsy, wsx, 1), generator=g)
                                for g in generators]).to(metric.device)
        else:
            rand = torch.zeros(1, hsy, wsx, 1, dtype=torch.int64, device=metric.device)
        groups = rand.shape[0]
        # -1 marks each cell's destination, 0 its sources; an argsort puts destinations first
        buf = torch.zeros(groups, hsy, wsx, sy * sx, dtype=torch.int64, device=metric.device)
        buf.scatter_(3, rand, -torch.ones_like(rand))
        buf = buf.view(groups, hsy, wsx, sy, sx).transpose(2, 3).reshape(groups, hsy * sy,
                                                                        wsx * sx)
        if hsy * sy < h or wsx * sx < w:  # the grid does not divide: the edge rows are sources
            full = torch.zeros(groups, h, w, dtype=torch.int64, device=metric.device)
            full[:, :hsy * sy, :wsx * sx] = buf
            buf = full
        order = buf.reshape(groups, -1, 1).argsort(dim=1, stable=True)
        if groups == 1 or B % groups:
            order = order[:1].expand(B, N, 1)
        else:
            order = order.repeat(B // groups, 1, 1)
        a_idx, b_idx = order[:, num_dst:, :], order[:, :num_dst, :]  # sources, destinations
        n_src = N - num_dst

        def split(x):
            c = x.shape[-1]
            return (torch.gather(x, 1, a_idx.expand(B, n_src, c)),
                    torch.gather(x, 1, b_idx.expand(B, num_dst, c)))

        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = split(metric)
        scores = a @ b.transpose(-1, -2)
        r = min(n_src, r)
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True, stable=True)[..., None]
        unm_idx, src_idx = edge_idx[:, r:, :], edge_idx[:, :r, :]
        dst_idx = torch.gather(node_idx[..., None], 1, src_idx)
        unm_pos = torch.gather(a_idx, 1, unm_idx)  # positions in the N tokens
        src_pos = torch.gather(a_idx, 1, src_idx)

    def merge(x):
        src, dst = split(x)
        c = x.shape[-1]
        unm = torch.gather(src, 1, unm_idx.expand(B, n_src - r, c))
        src = torch.gather(src, 1, src_idx.expand(B, r, c))
        dst = dst.scatter_reduce(1, dst_idx.expand(B, r, c), src, reduce="mean")
        return torch.cat([unm, dst], dim=1)

    def unmerge(x):
        c = x.shape[-1]
        unm, dst = x[:, :n_src - r, :], x[:, n_src - r:, :]
        out = torch.zeros(B, N, c, device=x.device, dtype=x.dtype)
        out.scatter_(1, b_idx.expand(B, num_dst, c), dst)
        out.scatter_(1, unm_pos.expand(B, n_src - r, c), unm)
        out.scatter_(1, src_pos.expand(B, r, c), torch.gather(dst, 1, dst_idx.expand(B, r, c)))
        return out

    return merge, unmerge


class _State:
    """One call's settings, the latent size the UNet was last called with, and counters."""

    def __init__(self, ratio: float, max_downsample: int, generators, stride):
        self.ratio, self.max_downsample, self.generators = ratio, max_downsample, generators
        self.sx, self.sy = stride
        self.size = None  # (h, w) of the latents of the current UNet call
        self.merged = 0  # attention calls that ran on merged tokens (tests)

    def plan(self, metric):
        """(merge, unmerge) for a block's tokens, or None where this block keeps them all."""
        if self.size is None:
            return None
        h0, w0 = self.size
        n = metric.shape[1]
        downsample = int(math.ceil(math.sqrt(h0 * w0 // n))) if n else 0
        if not 0 < downsample <= self.max_downsample:
            return None
        h, w = math.ceil(h0 / downsample), math.ceil(w0 / downsample)
        r = int(n * self.ratio)
        if h * w != n or r <= 0:
            return None
        self.merged += 1
        return bipartite_soft_matching_random2d(metric, w, h, self.sx, self.sy, r,
                                                self.generators)


class MergingProcessor:
    """`attn1`'s own processor with tokens merged before it and unmerged after.

    diffusers' Attention passes a processor only the keyword arguments its signature names:
    these are what self-attention gets in SD 1.x / 2.x / SDXL (others are dropped, with
    diffusers' warning, where the wrapped processor would have dropped them too)."""

    def __init__(self, inner, state: _State):
        self.inner, self.state = inner, state
        self.metric = None  # the block's input (tomesd's similarity metric), set by a hook

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs):
        kw = dict(encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask,
                  **kwargs)
        if temb is not None:
            kw["temb"] = temb
        metric, self.metric = self.metric, None
        # self-attention on (B, N, C) tokens without a mask only
        plan = None
        if encoder_hidden_states is None and attention_mask is None and hidden_states.ndim == 3:
            if metric is None or metric.shape[:2] != hidden_states.shape[:2]:
                metric = hidden_states
            plan = self.state.plan(metric)
        if plan is None:
            return self.inner(attn, hidden_states, **kw)
        merge, unmerge = plan
        return unmerge(self.inner(attn, merge(hidden_states), **kw))


def _blocks(unet):
    from diffusers.models.attention import BasicTransformerBlock

    return [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]


@contextmanager
def applied(unet, ratio: float, seeds=None, random: bool = False,
            max_downsample: int | None = None, stride: tuple[int, int] = STRIDE):
    """Token merging on `unet` for the block (nothing when ratio is 0); yields its state.
    `seeds`: the call's images' seeds, which seed the random destinations; `max_downsample`
    None: MAX_DOWNSAMPLE."""
    if not ratio or unet is None:
        yield None
        return
    import torch

    max_downsample = MAX_DOWNSAMPLE if max_downsample is None else max_downsample
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds] if random and seeds \
        else None
    state = _State(ratio, max_downsample, gens, stride)
    handles, saved = [], []

    def size_hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        state.size = tuple(sample.shape[-2:])

    try:
        handles.append(unet.register_forward_pre_hook(size_hook, with_kwargs=True))
        for block in _blocks(unet):
            attn = block.attn1
            wrapper = MergingProcessor(attn.processor, state)
            saved.append((attn, attn.processor))
            attn.set_processor(wrapper)

            def keep_metric(module, args, kwargs, wrapper=wrapper):
                wrapper.metric = args[0] if args else kwargs.get("hidden_states")

            handles.append(block.register_forward_pre_hook(keep_metric, with_kwargs=True))
        yield state
    finally:
        for h in handles:
            h.remove()
        for attn, processor in reversed(saved):
            attn.set_processor(processor)
