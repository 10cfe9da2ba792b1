"""`modal run -m functions.weights ...`: fill the weights volume; a re-run fetches what is missing.

    modal run -m functions.weights --model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --lora detail=https://example.com/add_detail.safetensors --configs flux-dev

Options (--model, --checkpoint, --lora, --embedding, --repo, --configs, --force) are
infra/weights.py's (locally the same filler is `sdgate pull ...`); progress
prints in your terminal while the download runs in a CPU container next to the volume.
"""

from pathlib import Path

from functions.app import MODELS_DIR, app, hf_secrets, weights_image, weights_volume
from infra import weights as plan


# Downloads are network-bound: a small CPU container, long timeout for multi-GB repos.
@app.function(image=weights_image, volumes={MODELS_DIR: weights_volume}, secrets=hf_secrets,
              timeout=4 * 3600)
def fill(items: list[plan.Item], force: bool = False) -> list[str]:
    """Fetch the items into the volume, committing after each one."""
    return plan.fill(Path(MODELS_DIR), items, force,
                     log=lambda line: print(line, flush=True), commit=weights_volume.commit)


@app.local_entrypoint()
def main(*argv: str):
    items, force = plan.parse(argv)  # bad options fail here, before any container starts
    for line in fill.remote(items, force):
        print(line)
