"""Deploy-time configuration of the Modal app, and the checks a deployed app runs at start-up.

`functions/app.py` reads DeployConfig when `modal deploy` imports it; every knob is an SDGATE_*
environment variable with a scale-to-zero default. The values are copied into the containers'
environment too, so code there sees what was deployed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.config import Settings

# Runtime settings fixed by the deployment itself.
NOT_PASSED = {"SDGATE_MODELS_DIR", "SDGATE_DEVICE", "SDGATE_OUTPUT_DIR", "SDGATE_STATE_DB"}
# Secret settings reach containers only through Modal Secrets, never an image's environment
# (image layers are readable by anyone with access to the workspace and are cached).
SECRET = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|DATABASE_URL", re.I)


class DeployConfig(BaseSettings):
    """What `modal deploy` builds: GPU type, autoscaling, timeouts, concurrency, object names."""

    model_config = SettingsConfigDict(env_prefix="SDGATE_", extra="ignore")

    app_name: str = "sdgate"
    # GPU class. Scale to zero by default: no container (and no bill) while idle.
    gpu: str = "L40S"
    gpu_min_containers: int = Field(0, ge=0)  # >0 keeps GPUs warm (and billed) around the clock
    gpu_buffer_containers: int = Field(0, ge=0)  # idle extra GPUs while busy: absorbs bursts
    gpu_max_containers: int = Field(4, ge=0)  # a spending cap; 0 means no cap
    gpu_scaledown_window: int = Field(60, ge=2, le=3600)  # idle seconds before a GPU stops
    gpu_timeout: int = Field(600, ge=10, le=86400)  # seconds per generation (and start-up)
    gpu_concurrency: int = Field(4, ge=1, le=64)  # inputs per container: = SDGATE_MAX_BATCH, so 4 can share a call
    gpu_snapshot: bool = False  # Modal's GPU memory snapshot (alpha): VRAM restored too
    # CPU web function (the FastAPI app).
    web_min_containers: int = Field(0, ge=0)
    web_scaledown_window: int = Field(300, ge=2, le=3600)
    web_timeout: int = Field(900, ge=10, le=86400)
    web_concurrency: int = Field(100, ge=1, le=1000)  # async requests per web container
    # Names of the Modal objects the app uses.
    modal_volume: str = "sdgate-weights"
    modal_state_dict: str = "sdgate-state"  # shared/state.py: progress, flags, options, claims
    modal_state_queue: str = "sdgate-queue"
    modal_s3_secret: str = "sdgate-s3"
    modal_api_secret: str = "sdgate-api"
    modal_hf_secret: str = ""  # optional: a secret with HF_TOKEN, for gated or private repos

    def container_env(self, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """Environment for the containers: these knobs, plus runtime SDGATE_* settings given at
        deploy time (SDGATE_DEFAULT_MODEL, ...), never a secret one (API keys, webhook secret,
        database URL: those live in a Modal Secret)."""
        env = {f"SDGATE_{k.upper()}": str(v) for k, v in self.model_dump().items()}
        passed = {f"SDGATE_{name.upper()}" for name in Settings.model_fields} - NOT_PASSED
        env.update({k: v for k, v in environ.items() if k in passed})
        return {k: v for k, v in env.items() if not SECRET.search(k.removeprefix("SDGATE_"))}

    @staticmethod
    def secrets_left_out(environ: Mapping[str, str] = os.environ) -> list[str]:
        """Secret SDGATE_* settings set at deploy time (they must go into a Modal Secret)."""
        names = {f"SDGATE_{name.upper()}" for name in Settings.model_fields}
        return sorted(k for k in environ if k in names and SECRET.search(k.removeprefix("SDGATE_")))


def require_keys(settings: Settings) -> None:
    """A public deployment needs API keys (a list, or a key database, which demands a key on
    every request); running open must be asked for by name."""
    if not settings.keys() and not settings.database_url and not settings.allow_open:
        raise RuntimeError(
            "sdgate refuses to serve on a public URL with no API keys: put SDGATE_API_KEYS=k1,k2 "
            "or SDGATE_DATABASE_URL (keys made with `sdgate keys create`) in the Modal secret "
            "(default name sdgate-api), or set SDGATE_ALLOW_OPEN=1 there to let anyone with the "
            "URL generate on your GPUs.")


def require_bucket(settings: Settings) -> None:
    """On Modal, results must go to object storage: a container's own disk vanishes with it."""
    if not settings.s3_bucket:
        raise RuntimeError(
            "sdgate on Modal needs an S3 bucket for results: put SDGATE_S3_BUCKET (and "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) in the Modal secret (default sdgate-s3).")
