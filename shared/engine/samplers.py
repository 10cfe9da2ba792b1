"""Sampler names (A1111's and diffusers' class names) -> diffusers scheduler classes, as data.

Resolution is pure: it returns a SamplerSpec; the engine builds the scheduler once per model and
spec with `Cls.from_config(pipe.scheduler.config, **options)` and reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.errors import SamplerNotFound

DPM_SDE = {"algorithm_type": "sde-dpmsolver++"}

# A1111 sampler name -> (diffusers class, options). Order is the order /samplers lists them.
A1111_SAMPLERS: dict[str, tuple[str, dict]] = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ SDE": ("DPMSolverSinglestepScheduler", {}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", DPM_SDE),
    "DPM++ 2M SDE Heun": ("DPMSolverMultistepScheduler", {**DPM_SDE, "solver_type": "heun"}),
    "DPM++ 3M SDE": ("DPMSolverMultistepScheduler", {**DPM_SDE, "solver_order": 3}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
    "LCM": ("LCMScheduler", {}),
}

# A1111 schedule types (the `scheduler` field, and the old " Karras" name suffixes).
SCHEDULE_TYPES: dict[str, dict] = {
    "automatic": {},
    "uniform": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
    "sgm_uniform": {"timestep_spacing": "trailing"},
    "simple": {"timestep_spacing": "trailing"},
}
SCHEDULE_LABELS = {"automatic": "Automatic", "uniform": "Uniform", "karras": "Karras",
                   "exponential": "Exponential", "beta": "Beta", "sgm_uniform": "SGM Uniform",
                   "simple": "Simple"}

DIFFUSERS_CLASSES = sorted({cls for cls, _ in A1111_SAMPLERS.values()} | {
    "DPMSolverSDEScheduler", "TCDScheduler", "DDPMScheduler"})

_BY_LOWER = {k.lower(): k for k in A1111_SAMPLERS}
_CLASS_LOWER = {c.lower(): c for c in DIFFUSERS_CLASSES}


@dataclass(frozen=True)
class SamplerSpec:
    """A resolved sampler: the scheduler class, its options, and the A1111 display name."""

    class_name: str
    options: tuple = field(default_factory=tuple)  # sorted (key, value) pairs, hashable
    label: str = ""

    def kwargs(self) -> dict:
        return dict(self.options)


def _freeze(opts: dict) -> tuple:
    return tuple(sorted(opts.items()))


def resolve(name: str | None, schedule: str | None = None, **extra) -> SamplerSpec | None:
    """Resolve an A1111 name ("DPM++ 2M SDE Karras") or diffusers class name, or None for default.

    `extra` are explicit diffusers options (ModelsLab's use_karras_sigmas, algorithm_type).
    """
    if not name and not schedule and not extra:
        return None
    sched = (schedule or "").strip().lower() or None
    if sched and sched not in SCHEDULE_TYPES:
        raise SamplerNotFound(f"Scheduler not found: {schedule!r}; choose one of "
                              f"{', '.join(SCHEDULE_TYPES)}", param="scheduler")
    key = (name or "Euler a").strip()
    low = key.lower()
    if low in _CLASS_LOWER:
        cls, opts, label = _CLASS_LOWER[low], {}, _CLASS_LOWER[low]
    else:
        for suffix in ("karras", "exponential"):  # old-style "DPM++ 2M Karras"
            if low.endswith(" " + suffix) and low[: -len(suffix) - 1] in _BY_LOWER:
                low, sched = low[: -len(suffix) - 1], sched or suffix
        if low not in _BY_LOWER:
            raise SamplerNotFound(
                f"Sampler not found: {name!r}; choose one of "
                f"{', '.join(list(A1111_SAMPLERS) + DIFFUSERS_CLASSES)}", param="sampler_name")
        label = _BY_LOWER[low]
        cls, opts = A1111_SAMPLERS[label]
        if sched and sched not in ("automatic",):
            label = f"{label} {SCHEDULE_LABELS[sched]}"
    opts = {**opts, **SCHEDULE_TYPES.get(sched or "automatic", {}),
            **{k: v for k, v in extra.items() if v is not None}}
    return SamplerSpec(cls, _freeze(opts), label)


def build(spec: SamplerSpec, base_config):
    """Build a scheduler for `spec` from a pipeline's scheduler config; refuse unsupported options."""
    import diffusers

    cls = getattr(diffusers, spec.class_name)
    sched = cls.from_config(base_config, **spec.kwargs())
    for k, v in spec.options:
        if sched.config.get(k, object()) != v:
            raise SamplerNotFound(f"{spec.label or spec.class_name} does not support {k}={v!r}",
                                  param="scheduler")
    return sched


def a1111_names() -> list[str]:
    """A1111 sampler names, for /sdapi/v1/samplers."""
    return list(A1111_SAMPLERS)
