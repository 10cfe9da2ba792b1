"""The Modal app: its images (pinned), the weights volume, the state Dict and Queue, the secrets.

Deploy-time knobs are SDGATE_* environment variables (shared/deploy.py), read here whenever
`modal deploy -m functions.web` imports this module; docs/modal.md explains each one.
"""

import sys
from pathlib import Path

import modal

from shared.deploy import DeployConfig

config = DeployConfig()
app = modal.App(config.app_name)
for _name in config.secrets_left_out() if "deploy" in sys.argv else []:  # never in an image
    print(f"sdgate deploy: {_name} is not copied into the images; put it in the "
          f"{config.modal_api_secret} Modal secret", flush=True)

MODELS_DIR = "/models"  # the weights volume; the registry's layout (see infra/weights.py)
PYTHON_VERSION = "3.11"  # the version the tests run on; pickled requests cross it both ways

# ## Images
#
# Every package is pinned to the version the test suite ran with. pyproject.toml keeps the local
# (CPU) install's ranges; these pins are the deployment's own and change only on purpose.
# The web app and the weights filler need no torch: their image stays small and starts fast.

CPU_PACKAGES = [
    "alembic==1.20.1",  # the key / usage database's migrations
    "anyio==4.16.0",
    "boto3==1.44.8",
    "fastapi==0.165.0",
    "hf-xet==1.8.0",
    "httpx==0.29.0",
    "huggingface-hub==2.4.0",
    "lark==1.3.1",  # A1111 prompt editing: the web tier parses prompts too
    "numpy==2.4.6",  # sampler schedules and image checks the web tier validates with
    "pillow==13.0.0",
    "prometheus-client==0.26.0",  # /metrics
    "psycopg[binary]==3.3.9",  # keys and usage on PostgreSQL
    "pydantic==2.14.4",
    "pydantic-settings==2.16.3",
    "python-multipart==0.0.34",
    "sqlalchemy==2.1.9",  # keys, usage, quotas
]

# PyPI's Linux torch wheel is the CUDA build; diffusers is the version the engine is written for.
GPU_PACKAGES = [
    "accelerate==1.16.0",
    "diffusers==0.42.1",
    "onnx==1.23.2",  # inswapper's emap is read from the graph
    "onnxruntime-gpu==1.31.1",  # face models on the CUDA provider (CPU provider as fallback)
    "opencv-python-headless==5.1.0.95",  # ControlNet preprocessors (canny, ...)
    "peft==0.21.2",
    "safetensors==0.8.0",
    "sentencepiece==0.2.3",  # MarianTokenizer: the `translate` operation (multi_lingual)
    "spandrel==0.4.2",  # upscalers and face restorers
    "spandrel_extra_arches==0.2.0",  # CodeFormer (non-commercial licence: docs/faces.md)
    "tokenizers==0.23.3",
    "torch==2.14.1",
    "torchsde==0.2.6",  # A1111 "DPM++ SDE" (DPMSolverSDEScheduler)
    "torchvision==0.29.1",  # spandrel (upscalers, face restorers) imports it
    "transformers==5.24.0",
]

base_image = modal.Image.debian_slim(python_version=PYTHON_VERSION).uv_pip_install(*CPU_PACKAGES)

# Settings chosen at deploy time travel as environment; weights come only from the volume, so the
# serving images forbid Hugging Face downloads at run time.
serving_env = {**config.container_env(), "SDGATE_MODELS_DIR": MODELS_DIR, "HF_HUB_OFFLINE": "1"}

# The packages travel with their data files (the model configs in shared/engine/archs that TAESD
# previews and the benchmark build from, the migrations' template): Modal's default takes `.py`
# files only. Caches and compiled files stay behind.
SOURCE_FILES = (".py", ".json", ".mako")


def source_ignore(path: Path) -> bool:
    """True for files the images leave out: all but code and data, and caches."""
    return path.suffix not in SOURCE_FILES or "__pycache__" in path.parts


def with_source(image: modal.Image, *modules: str) -> modal.Image:
    """`image` with these local packages (code and data files) added."""
    return image.add_local_python_source(*modules, ignore=source_ignore)


web_image = with_source(base_image.env(serving_env), "shared", "functions")

# One-file checkpoints need their family's configs: the weights filler caches them on the volume
# (infra/weights.py HF_CACHE) and the GPU containers read them there, offline.
gpu_image = (
    base_image.uv_pip_install(*GPU_PACKAGES)
    .env({**serving_env, "SDGATE_DEVICE": "cuda", "HF_HUB_CACHE": f"{MODELS_DIR}/.hf-cache"})
)
gpu_image = with_source(gpu_image, "shared", "functions")

weights_image = with_source(base_image, "shared", "functions", "infra")

# ## Storage and state
#
# Weights live in a Volume filled once by functions/weights.py; job states, progress and claims
# live in a Dict (and the split topology's work in a Queue) that every container shares, so a
# restarted container still answers for earlier jobs.

weights_volume = modal.Volume.from_name(config.modal_volume, create_if_missing=True)
# The cross-container state store (shared/state.py): task progress and interrupt/skip flags the
# GPU class writes and reads at each step, per-key options, the spam filter, claims, queues.
state_dict = modal.Dict.from_name(config.modal_state_dict, create_if_missing=True)
state_queue = modal.Queue.from_name(config.modal_state_queue, create_if_missing=True)


def shared_state(settings):
    """Modal's primitives in a deployed container; the settings' local store under `.local()`."""
    from shared.state import ModalState, make_state

    return make_state(settings) if modal.is_local() else ModalState(state_dict, state_queue)

# ## Secrets
#
# S3 credentials and bucket reach both the GPU class (it uploads) and the web app (it signs
# URLs); API keys reach only the web app. Required keys are checked by `modal deploy`.

s3_secret = modal.Secret.from_name(
    config.modal_s3_secret,
    required_keys=["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "SDGATE_S3_BUCKET"])
api_secret = modal.Secret.from_name(config.modal_api_secret)
hf_secrets = ([modal.Secret.from_name(config.modal_hf_secret, required_keys=["HF_TOKEN"])]
              if config.modal_hf_secret else [])
