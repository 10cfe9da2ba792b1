"""ModelsLab `enhance_prompt`: a prompt model's continuation when one is installed
(<models_dir>/prompt_enhancer, a tiny random GPT-2 here), else the documented fixed suffix."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import with_tiny
from tests.http_helpers import fetch_png

BODY = {"key": "", "prompt": "a red house", "width": "64", "height": "64",
        "num_inference_steps": "2", "seed": 3}


@pytest.fixture(scope="module")
def pm_dir(models_dir, tmp_path_factory):
    from shared.engine.tiny_prompt_model import write_tiny_prompt_model

    root = with_tiny(tmp_path_factory.mktemp("mlprompt"), models_dir)
    write_tiny_prompt_model(root / "prompt_enhancer")
    return root


@pytest.fixture
def pm(client_on, pm_dir):
    return client_on(pm_dir)


def pixels(client, out) -> np.ndarray:
    assert out["status"] == "success", out
    return np.asarray(fetch_png(client, out["output"][0]).convert("RGB")).astype(int)


def test_enhance_prompt_uses_the_installed_prompt_model(pm):
    from shared.config import Settings

    suffix = Settings(_env_file=None).enhance_prompt_suffix
    out = pm.post("/api/v3/text2img", json=BODY).json()  # enhance_prompt defaults to yes
    enhanced = out["meta"]["prompt"]
    assert enhanced.startswith("a red house ") and len(enhanced) > len("a red house ")
    assert suffix not in enhanced and out["meta"]["enhance_prompt"] == "yes"
    # deterministic: the same prompt is enhanced the same way (another seed: not the spam filter)
    again = pm.post("/api/v3/text2img", json={**BODY, "seed": 4}).json()
    assert again["meta"]["prompt"] == enhanced
    # and the engine drew that prompt: "no" keeps the prompt, and the picture differs
    plain = pm.post("/api/v3/text2img", json={**BODY, "enhance_prompt": "no"}).json()
    assert plain["meta"]["prompt"] == "a red house"
    assert np.abs(pixels(pm, out) - pixels(pm, plain)).mean() > 0.1


def test_enhance_prompt_without_a_prompt_model_appends_the_fixed_suffix(client):
    from shared.config import Settings

    suffix = Settings(_env_file=None).enhance_prompt_suffix
    out = client.post("/api/v3/text2img", json=BODY).json()
    assert out["status"] == "success" and out["meta"]["prompt"] == f"a red house, {suffix}"


def test_the_operation_refuses_without_a_model(engine):
    from shared.engine import ops
    from shared.errors import Unsupported
    from shared.prompt_enhance import EnhancePromptRequest

    with pytest.raises(Unsupported):
        ops.run(engine, "enhance_prompt", EnhancePromptRequest(prompt="x"))
