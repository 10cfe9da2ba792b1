"""Every upstream sampler x schedule type on the tiny model, and the schedule math itself."""

import io
import time

import numpy as np
import pytest
from PIL import Image

from shared.engine import samplers, schedules
from shared.errors import SamplerNotFound, Unsupported
from shared.generation import GenerationRequest

MAPPED = [n for n, row in samplers.A1111_SAMPLERS.items() if row[0]]
SCHEDULES = list(samplers.SCHEDULE_TYPES)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def _run(engine, sampler, schedule, seed=7):
    r = engine.generate(GenerationRequest(prompt="a red fox", width=64, height=64, steps=3,
                                          seed=seed, sampler=sampler, scheduler=schedule))
    return pixels(r.images[0].data)


@pytest.fixture(scope="module")
def grid(engine):
    """Every mapped sampler x every schedule type: pixels per pair."""
    t = time.perf_counter()
    out = {(s, k): _run(engine, s, k) for s in MAPPED for k in SCHEDULES}
    print(f"{len(out)} sampler x schedule runs in {time.perf_counter() - t:.1f}s")
    return out


@pytest.mark.parametrize("sampler", MAPPED)
def test_every_schedule_draws_finite_varied_pixels(grid, sampler):
    for k in SCHEDULES:
        px = grid[(sampler, k)]
        assert px.shape == (64, 64, 3) and np.isfinite(px).all(), (sampler, k)
        assert px.std() > 0, (sampler, k)


@pytest.mark.parametrize("sampler", [s for s in MAPPED if s not in samplers.TIMESTEP_SAMPLERS])
def test_schedules_change_the_picture(grid, sampler):
    # Each schedule walks other sigmas. Some coincide by their math, upstream's too (exponential
    # is polyexponential at rho 1; normal is uniform, and simple ~ sgm_uniform, at few steps);
    # automatic is the sampler's default schedule, as upstream.
    apart = ["uniform", "karras", "exponential", "sgm_uniform", "kl_optimal", "align_your_steps",
             "ddim", "beta"]
    assert len({grid[(sampler, k)].tobytes() for k in apart}) == len(apart), sampler
    default = samplers.A1111_SAMPLERS[sampler][3].get("scheduler", "uniform")
    assert np.array_equal(grid[(sampler, "automatic")], grid[(sampler, default)])


def test_timestep_samplers_ignore_the_schedule_as_upstream(grid):
    for s in samplers.TIMESTEP_SAMPLERS:
        assert np.array_equal(grid[(s, "karras")], grid[(s, "uniform")])


def test_aliases_and_suffixes_resolve():
    assert samplers.resolve("k_euler_a").class_name == "EulerAncestralDiscreteScheduler"
    assert samplers.resolve("k_dpmpp_2m_sde").schedule == "exponential"
    spec = samplers.resolve("DPM++ 2M SGM Uniform")
    assert (spec.schedule, spec.label) == ("sgm_uniform", "DPM++ 2M SGM Uniform")
    assert samplers.resolve("Euler", "SGMUniform").schedule == "sgm_uniform"
    assert samplers.resolve("DPM2").discard_penultimate


@pytest.mark.parametrize("name", list(samplers.REFUSED))
def test_unmapped_samplers_are_refused_with_the_reason(name):
    with pytest.raises(Unsupported, match="diffusers has no"):
        samplers.resolve(name)


def test_unknown_schedule_names_the_choices():
    with pytest.raises(SamplerNotFound, match="karras, exponential"):
        samplers.resolve("Euler", "bogus")


def test_listing_matches_upstream_shape():
    rows = {r["name"]: r for r in samplers.a1111_list()}
    assert rows["Euler a"] == {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"],
                               "options": {"uses_ensd": True}}
    assert rows["DPM++ 2M"]["options"] == {"scheduler": "karras"}
    assert list(rows)[:2] == ["DPM++ 2M", "DPM++ SDE"] and len(rows) == 20


def test_schedule_math():
    ms = schedules.model_sigmas(np.linspace(0.999, 0.005, 1000))
    for name in SCHEDULES[1:]:
        s = schedules.sigmas(name, 5, ms)
        assert len(s) == 6 and np.all(np.diff(s) <= 0), name
    k = schedules.karras(4, ms)
    assert np.isclose(k[0], ms[-1]) and np.isclose(k[3], ms[0]) and k[4] == 0
    assert len(schedules.sigmas("karras", 4, ms, discard_penultimate=True)) == 5
    assert np.allclose(schedules.align_your_steps(11, ms)[:-1], schedules.AYS_SD15)
