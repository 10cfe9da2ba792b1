"""A1111's sigma schedules (upstream modules/sd_schedulers.py) as pure numpy over a model's sigmas.

Each function returns the n+1 descending sigmas a k-diffusion sampler walks (the last one 0,
except kl_optimal's, which ends at sigma_min as upstream's does). `model_sigmas` is the model's
training sigma table, ascending with the timestep: sqrt((1 - alphas_cumprod) / alphas_cumprod).
"""

from __future__ import annotations

import numpy as np

# Align Your Steps' published 10-step sigmas (research.nvidia.com/labs/toronto-ai/AlignYourSteps)
AYS_SD15 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
AYS_SDXL = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]
BETA_ALPHA = BETA_BETA = 0.6  # upstream's beta_dist_alpha / beta_dist_beta option defaults


def model_sigmas(alphas_cumprod) -> np.ndarray:
    a = np.asarray(alphas_cumprod, dtype=np.float64)
    return np.sqrt((1 - a) / a)


def sigma_to_t(sigma, ms: np.ndarray) -> np.ndarray:
    """Fractional timesteps of sigmas, interpolating in log-sigma (k-diffusion's DiscreteSchedule)."""
    log_s = np.log(np.maximum(np.atleast_1d(np.asarray(sigma, dtype=np.float64)), 1e-10))
    return np.interp(log_s, np.log(ms), np.arange(len(ms), dtype=np.float64))


def t_to_sigma(t, ms: np.ndarray) -> np.ndarray:
    return np.exp(np.interp(np.asarray(t, dtype=np.float64), np.arange(len(ms)), np.log(ms)))


def _zero(s) -> np.ndarray:
    return np.append(np.asarray(s, dtype=np.float64), 0.0)


def uniform(n, ms, **_):
    return _zero(t_to_sigma(np.linspace(len(ms) - 1, 0, n), ms))


def karras(n, ms, rho=7.0, **_):
    lo, hi = ms[0] ** (1 / rho), ms[-1] ** (1 / rho)
    return _zero((hi + np.linspace(0, 1, n) * (lo - hi)) ** rho)


def exponential(n, ms, **_):
    return _zero(np.exp(np.linspace(np.log(ms[-1]), np.log(ms[0]), n)))


def polyexponential(n, ms, rho=1.0, **_):
    ramp = np.linspace(1, 0, n) ** rho
    return _zero(np.exp(ramp * (np.log(ms[-1]) - np.log(ms[0])) + np.log(ms[0])))


def sgm_uniform(n, ms, **_):
    start, end = sigma_to_t(ms[-1], ms)[0], sigma_to_t(ms[0], ms)[0]
    return _zero(t_to_sigma(np.linspace(start, end, n + 1)[:-1], ms))


def kl_optimal(n, ms, **_):
    lo, hi = np.arctan(ms[0]), np.arctan(ms[-1])
    i = np.arange(n + 1) / n
    return np.tan(i * lo + (1.0 - i) * hi)


def align_your_steps(n, ms, sdxl=False, **_):
    table = AYS_SDXL if sdxl else AYS_SD15
    if n == len(table):
        return _zero(table)
    xs = np.linspace(0, 1, len(table))
    ys = np.log(table[::-1])
    return _zero(np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1])


def simple(n, ms, **_):
    ss = len(ms) / n
    return _zero([ms[-(1 + int(x * ss))] for x in range(n)])


def normal(n, ms, **_):
    start, end = sigma_to_t(ms[-1], ms)[0], sigma_to_t(ms[0], ms)[0]
    return _zero(t_to_sigma(np.linspace(start, end, n), ms))


def ddim(n, ms, **_):
    ss = max(len(ms) // n, 1)
    sigs = [ms[x] for x in range(1, len(ms), ss)][::-1]
    return _zero(sigs[:n])  # upstream can yield one more step than asked; keep the n noisiest


def beta(n, ms, **_):
    from scipy import stats

    ts = stats.beta.ppf(1 - np.linspace(0, 1, n), BETA_ALPHA, BETA_BETA)
    return _zero(ms[0] + ts * (ms[-1] - ms[0]))


# name -> (label, function, default_rho, need_inner_model, aliases), upstream's order
SCHEDULES: dict[str, tuple] = {
    "automatic": ("Automatic", None, -1, False, None),
    "uniform": ("Uniform", uniform, -1, True, None),
    "karras": ("Karras", karras, 7.0, False, None),
    "exponential": ("Exponential", exponential, -1, False, None),
    "polyexponential": ("Polyexponential", polyexponential, 1.0, False, None),
    "sgm_uniform": ("SGM Uniform", sgm_uniform, -1, True, ["SGMUniform"]),
    "kl_optimal": ("KL Optimal", kl_optimal, -1, False, None),
    "align_your_steps": ("Align Your Steps", align_your_steps, -1, False, None),
    "simple": ("Simple", simple, -1, True, None),
    "normal": ("Normal", normal, -1, True, None),
    "ddim": ("DDIM", ddim, -1, True, None),
    "beta": ("Beta", beta, -1, True, None),
}


def sigmas(name: str, n: int, ms: np.ndarray, *, discard_penultimate: bool = False,
           sdxl: bool = False) -> np.ndarray:
    """The schedule `name` for n steps; `discard_penultimate` draws n+1 and drops the last
    non-zero sigma, as upstream does for DPM2 and DPM++ 3M SDE."""
    fn = SCHEDULES[name][1]
    if discard_penultimate:
        s = fn(n + 1, ms, sdxl=sdxl)
        return np.concatenate([s[:-2], s[-1:]])
    return fn(n, ms, sdxl=sdxl)
