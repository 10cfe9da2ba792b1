"""Sampler name table."""

import pytest

from shared.engine import samplers
from shared.errors import SamplerNotFound


def test_karras_suffix_and_sde():
    spec = samplers.resolve("DPM++ 2M SDE Karras")
    assert spec.class_name == "DPMSolverMultistepScheduler"
    assert spec.kwargs() == {"algorithm_type": "sde-dpmsolver++"}
    assert spec.schedule == "karras"
    assert spec.label == "DPM++ 2M SDE Karras"


def test_schedule_type_field_equals_suffix():
    assert samplers.resolve("DPM++ 2M", "karras") == samplers.resolve("DPM++ 2M Karras")


def test_case_insensitive_and_diffusers_class_names():
    assert samplers.resolve("euler a").class_name == "EulerAncestralDiscreteScheduler"
    assert samplers.resolve("UniPCMultistepScheduler").class_name == "UniPCMultistepScheduler"
    assert samplers.resolve(None) is None


@pytest.mark.parametrize("name,sched", [("Bogus", None), ("Euler", "bogus")])
def test_unknown_names_raise_with_choices(name, sched):
    with pytest.raises(SamplerNotFound, match="choose one of"):
        samplers.resolve(name, sched)


def test_every_table_entry_builds(engine):
    base = engine.warm().pipe.scheduler.config
    for name in samplers.a1111_names():
        if name in samplers.REFUSED:
            continue
        assert type(samplers.build(samplers.resolve(name), base)).__name__ == \
            samplers.A1111_SAMPLERS[name][0]


def test_unsupported_option_is_refused(engine):
    base = engine.warm().pipe.scheduler.config
    with pytest.raises(SamplerNotFound, match="does not support"):
        samplers.build(samplers.resolve("DDIMScheduler", "karras"), base)
