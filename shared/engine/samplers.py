"""Sampler names (A1111's and diffusers' class names) -> diffusers scheduler classes, as data.

Resolution is pure: it returns a SamplerSpec; the engine builds the scheduler once per model and
spec with `Cls.from_config(pipe.scheduler.config, **options)` and reuses it. A1111 schedule
types are applied to k-diffusion samplers as upstream does, by handing the scheduler the sigmas
of shared.engine.schedules (through its own sigma-conversion hook, so its timesteps, Heun/DPM2
interleaving and final sigma stay its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.engine import schedules
from shared.errors import SamplerNotFound, Unsupported

DPM_SDE = {"algorithm_type": "sde-dpmsolver++"}
KARRAS, EXPONENTIAL = {"scheduler": "karras"}, {"scheduler": "exponential"}

# A1111 v1.10 sampler -> (diffusers class, diffusers options, upstream aliases, upstream options).
# Order and aliases/options are upstream's (sd_samplers_kdiffusion, _timesteps, _lcm); a class
# of None is refused with the reason in REFUSED.
A1111_SAMPLERS: dict[str, tuple[str | None, dict, list[str], dict]] = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}, ["k_dpmpp_2m"], KARRAS),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {}, ["k_dpmpp_sde"],
                  {**KARRAS, "second_order": True, "brownian_noise": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", DPM_SDE, ["k_dpmpp_2m_sde"],
                     {**EXPONENTIAL, "brownian_noise": True}),
    "DPM++ 2M SDE Heun": ("DPMSolverMultistepScheduler", {**DPM_SDE, "solver_type": "heun"},
                          ["k_dpmpp_2m_sde_heun"],
                          {**EXPONENTIAL, "brownian_noise": True, "solver_type": "heun"}),
    "DPM++ 2S a": (None, {}, ["k_dpmpp_2s_a"],
                   {**KARRAS, "uses_ensd": True, "second_order": True}),
    "DPM++ 3M SDE": ("DPMSolverMultistepScheduler", {**DPM_SDE, "solver_order": 3},
                     ["k_dpmpp_3m_sde"], {**EXPONENTIAL, "discard_next_to_last_sigma": True,
                                          "brownian_noise": True}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}, ["k_euler_a", "k_euler_ancestral"],
                {"uses_ensd": True}),
    "Euler": ("EulerDiscreteScheduler", {}, ["k_euler"], {}),
    "LMS": ("LMSDiscreteScheduler", {}, ["k_lms"], {}),
    "Heun": ("HeunDiscreteScheduler", {}, ["k_heun"], {"second_order": True}),
    "DPM2": ("KDPM2DiscreteScheduler", {}, ["k_dpm_2"],
             {**KARRAS, "discard_next_to_last_sigma": True, "second_order": True}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}, ["k_dpm_2_a"],
               {**KARRAS, "discard_next_to_last_sigma": True, "uses_ensd": True,
                "second_order": True}),
    "DPM fast": (None, {}, ["k_dpm_fast"], {"uses_ensd": True}),
    "DPM adaptive": (None, {}, ["k_dpm_ad"], {"uses_ensd": True}),
    "Restart": (None, {}, ["restart"], {**KARRAS, "second_order": True}),
    "DDIM": ("DDIMScheduler", {}, ["ddim"], {}),
    "DDIM CFG++": (None, {}, ["ddim_cfgpp"], {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}, ["plms"], {}),
    "UniPC": ("UniPCMultistepScheduler", {}, ["unipc"], {}),
    "LCM": ("LCMScheduler", {}, ["k_lcm"], {}),
}
# Why the unmapped samplers are refused (docs/a1111.md repeats this).
REFUSED = {
    "DPM++ 2S a": "diffusers has no ancestral single-step DPM++ solver (its "
                  "DPMSolverSinglestepScheduler adds no noise, which draws a different picture)",
    "DPM fast": "diffusers has no DPM-Solver 'fast' (fixed-order adaptive-step) sampler",
    "DPM adaptive": "diffusers has no adaptive-step DPM-Solver (its step count is not fixed)",
    "Restart": "diffusers has no Restart sampler",
    "DDIM CFG++": "diffusers has no CFG++ variant of DDIM (it changes how guidance is applied)",
}
# Upstream's timestep samplers take no schedule type (their `scheduler` is not read).
TIMESTEP_SAMPLERS = {"DDIM", "PLMS", "UniPC"}
DEFAULT = "Euler a"

# A1111 schedule types (the `scheduler` field, and the old " Karras" name suffixes).
SCHEDULE_TYPES: dict[str, tuple] = schedules.SCHEDULES
SCHEDULE_LABELS = {name: row[0] for name, row in SCHEDULE_TYPES.items()}
# For diffusers class names (ModelsLab's `scheduler`), the class's own options, as before.
_NATIVE_SCHEDULES = {"karras": {"use_karras_sigmas": True},
                     "exponential": {"use_exponential_sigmas": True},
                     "beta": {"use_beta_sigmas": True},
                     "sgm_uniform": {"timestep_spacing": "trailing"},
                     "simple": {"timestep_spacing": "trailing"}}

DIFFUSERS_CLASSES = sorted({row[0] for row in A1111_SAMPLERS.values() if row[0]} | {
    "DEISMultistepScheduler", "DPMSolverSinglestepScheduler", "TCDScheduler", "DDPMScheduler"})

_BY_LOWER = {k.lower(): k for k in A1111_SAMPLERS}
_BY_LOWER.update({a.lower(): k for k, row in A1111_SAMPLERS.items() for a in row[2]})
_CLASS_LOWER = {c.lower(): c for c in DIFFUSERS_CLASSES}
_SCHED_LOWER = {k: k for k in SCHEDULE_TYPES}
_SCHED_LOWER.update({row[0].lower(): k for k, row in SCHEDULE_TYPES.items()})
_SCHED_LOWER.update({a.lower(): k for k, row in SCHEDULE_TYPES.items() for a in row[4] or []})


@dataclass(frozen=True)
class SamplerSpec:
    """A resolved sampler: the scheduler class, its options, and the A1111 display name.

    `schedule` names the A1111 sigma schedule to hand the scheduler ("" keeps its own)."""

    class_name: str
    options: tuple = field(default_factory=tuple)  # sorted (key, value) pairs, hashable
    label: str = ""
    schedule: str = ""
    discard_penultimate: bool = False

    def kwargs(self) -> dict:
        return dict(self.options)


def _freeze(opts: dict) -> tuple:
    return tuple(sorted(opts.items()))


def schedule_key(value: str | None) -> str | None:
    """A schedule type by name ("sgm_uniform"), label ("SGM Uniform") or alias; None if blank."""
    if not value or not value.strip():
        return None
    low = value.strip().lower()
    if low not in _SCHED_LOWER:
        raise SamplerNotFound(f"Scheduler not found: {value!r}; choose one of "
                              f"{', '.join(SCHEDULE_TYPES)}", param="scheduler")
    return _SCHED_LOWER[low]


def _split_suffix(low: str) -> tuple[str, str | None]:
    """Old-style names: "DPM++ 2M Karras" -> ("dpm++ 2m", "karras")."""
    if low in _BY_LOWER:
        return low, None
    for alias, key in sorted(_SCHED_LOWER.items(), key=lambda kv: -len(kv[0])):
        if low.endswith(" " + alias) and low[: -len(alias) - 1] in _BY_LOWER:
            return low[: -len(alias) - 1], key
    return low, None


def resolve(name: str | None, schedule: str | None = None, **extra) -> SamplerSpec | None:
    """Resolve an A1111 name ("DPM++ 2M SDE Karras"), alias ("k_euler_a") or diffusers class
    name, or None for the model's default.

    `extra` are explicit diffusers options (ModelsLab's use_karras_sigmas, algorithm_type).
    """
    if not name and not schedule and not extra:
        return None
    sched = schedule_key(schedule)
    key = (name or DEFAULT).strip()
    low = key.lower()
    extra = {k: v for k, v in extra.items() if v is not None}
    if low in _CLASS_LOWER:
        cls = _CLASS_LOWER[low]
        opts = {**_NATIVE_SCHEDULES.get(sched or "", {}), **extra}
        return SamplerSpec(cls, _freeze(opts), cls)
    low, suffix = _split_suffix(low)
    if low not in _BY_LOWER:
        raise SamplerNotFound(
            f"Sampler not found: {name!r}; choose one of "
            f"{', '.join(list(A1111_SAMPLERS) + DIFFUSERS_CLASSES)}", param="sampler_name")
    label = _BY_LOWER[low]
    cls, opts, _, upstream = A1111_SAMPLERS[label]
    if cls is None:
        raise Unsupported(f"sampler {label!r} is not available: {REFUSED[label]}",
                          param="sampler_name")
    sched = sched if sched and sched != "automatic" else suffix
    if label in TIMESTEP_SAMPLERS:
        chosen = ""  # upstream's DDIM/PLMS/UniPC read no schedule type
    else:
        chosen = sched or upstream.get("scheduler") or "uniform"
    if sched and chosen:
        label = f"{label} {SCHEDULE_LABELS[sched]}"
    return SamplerSpec(cls, _freeze({**opts, **extra}), label, chosen,
                       bool(upstream.get("discard_next_to_last_sigma")))


def _hook(spec: SamplerSpec, ms: np.ndarray, sdxl: bool):
    """`_convert_to_karras` replacement: the chosen A1111 schedule's sigmas, final 0 left off
    (the scheduler appends its own final sigma and derives the timesteps)."""
    def convert(in_sigmas, num_inference_steps=None):
        n = int(num_inference_steps or len(in_sigmas))
        s = schedules.sigmas(spec.schedule, n, ms, discard_penultimate=spec.discard_penultimate,
                             sdxl=sdxl)
        return s[:-1].astype(np.float64)
    return convert


def _install_schedule(sched, spec: SamplerSpec, sdxl: bool) -> None:
    """Make `sched` walk spec.schedule's sigmas."""
    import torch

    ms = schedules.model_sigmas(sched.alphas_cumprod)
    if hasattr(sched, "_convert_to_karras") and "use_karras_sigmas" in sched.config:
        sched.register_to_config(use_karras_sigmas=True, use_exponential_sigmas=False,
                                 use_beta_sigmas=False)
        if hasattr(sched, "use_karras_sigmas"):
            sched.use_karras_sigmas = True
        sched._convert_to_karras = _hook(spec, ms, sdxl)
        return
    original = sched.set_timesteps

    if spec.class_name == "LCMScheduler":
        def set_timesteps(num_inference_steps=None, device=None, **kw):
            s = schedules.sigmas(spec.schedule, num_inference_steps, ms, sdxl=sdxl,
                                 discard_penultimate=spec.discard_penultimate)
            ts = np.unique(np.clip(np.round(schedules.sigma_to_t(s[:-1], ms)), 0,
                                   len(ms) - 1).astype(int))[::-1]
            original(None, device, timesteps=[int(t) for t in ts],
                     strength=kw.get("strength", 1.0))
    else:  # first-order k-diffusion schedulers without a hook (Euler a): swap the arrays
        def set_timesteps(num_inference_steps, device=None, **kw):
            original(num_inference_steps, device, **kw)
            s = schedules.sigmas(spec.schedule, num_inference_steps, ms, sdxl=sdxl,
                                 discard_penultimate=spec.discard_penultimate)
            dev = sched.timesteps.device
            sched.sigmas = torch.tensor(s, dtype=torch.float32, device=dev)
            sched.timesteps = torch.tensor(schedules.sigma_to_t(s[:-1], ms),
                                           dtype=torch.float32, device=dev)
    sched.set_timesteps = set_timesteps


def build(spec: SamplerSpec, base_config, sdxl: bool = False):
    """Build a scheduler for `spec` from a pipeline's scheduler config; refuse unsupported options."""
    import diffusers

    try:
        cls = getattr(diffusers, spec.class_name)
    except ImportError as e:  # DPMSolverSDEScheduler without torchsde
        raise Unsupported(f"{spec.label}: {e}".strip(), param="sampler_name") from e
    sched = cls.from_config(base_config, **spec.kwargs())
    for k, v in spec.options:
        if sched.config.get(k, object()) != v:
            raise SamplerNotFound(f"{spec.label or spec.class_name} does not support {k}={v!r}",
                                  param="scheduler")
    if spec.schedule:
        _install_schedule(sched, spec, sdxl)
    return sched


def a1111_names() -> list[str]:
    """A1111 sampler names, for /sdapi/v1/samplers."""
    return list(A1111_SAMPLERS)


def a1111_list() -> list[dict]:
    """GET /sdapi/v1/samplers as upstream: name, aliases, options."""
    return [{"name": n, "aliases": list(row[2]), "options": dict(row[3])}
            for n, row in A1111_SAMPLERS.items()]


def seed(sched, seed_value: int) -> None:
    """Seed a scheduler's own noise (DPM++ SDE's Brownian tree draws from its own seed, which
    diffusers leaves random: a seed would not reproduce its picture). Upstream seeds it too."""
    if hasattr(sched, "noise_sampler_seed"):
        sched.noise_sampler_seed = int(seed_value)
        sched.noise_sampler = None
