"""Settings, read from SDGATE_* environment variables (flags of `sdgate serve` override them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# S3 presigned URLs cannot outlive 7 days (SigV4).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600


class Settings(BaseSettings):
    """Every knob sdgate has, with the embedded defaults a laptop needs."""

    model_config = SettingsConfigDict(env_prefix="SDGATE_", extra="ignore")

    # Auth: comma-separated keys; empty means open (fine on 127.0.0.1, refused on Modal).
    api_keys: str = ""
    # A deployed (Modal) web app refuses to start without keys unless this says so on purpose.
    allow_open: bool = False

    # Models
    models_dir: Path = Path(".sdgate/models")
    default_model: str | None = None
    max_loaded_models: int = Field(2, ge=1)
    # warm models' estimated size limit, GiB (None: 80% of the GPU's memory on CUDA, none on CPU)
    memory_budget_gb: float | None = Field(None, gt=0)
    # diffusers' model CPU offload: off | auto (a model larger than the budget) | model (every one)
    cpu_offload: Literal["off", "auto", "model"] = "off"
    device: str = "auto"  # auto | cpu | cuda

    # Storage: local files unless a bucket is set.
    output_dir: Path = Path(".sdgate/outputs")
    public_url: str = "http://127.0.0.1:7860"  # base of URLs to locally stored files
    s3_bucket: str | None = None
    s3_prefix: str = "sdgate/"
    s3_region: str | None = None
    s3_endpoint_url: str | None = None  # R2, MinIO, any S3 protocol server
    s3_public_url: str | None = None  # public base URL; unset means presigned GET URLs
    s3_presign_seconds: int = Field(24 * 3600, ge=1, le=MAX_PRESIGN_SECONDS)
    s3_upload_attempts: int = Field(4, ge=1, le=10)

    # Speed (docs/bench.md). "auto": on where it helps and is safe, which is on a GPU only.
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = "auto"  # auto: fp16 on cuda, fp32 on CPU
    sdpa: bool = True  # torch's scaled_dot_product_attention processor
    channels_last: Literal["auto"] | bool = "auto"
    fuse_qkv: bool = False  # off: fused projections would ignore LoRAs (refused while on)
    compile: bool = False  # torch.compile the UNet: minutes per new shape unless cached
    compile_mode: str = "max-autotune-no-cudagraphs"
    compile_cache_dir: Path | None = None  # TORCHINDUCTOR_CACHE_DIR; a volume on Modal
    tiny_vae: bool = False  # TAESD decode; needs <models_dir>/taesd (taesdxl for SDXL)
    deepcache_interval: int = Field(0, ge=0, le=50)  # 0 off; N: full UNet every Nth step
    max_batch: int = Field(4, ge=1, le=64)  # images per pipeline call; 1 turns batching off
    batch_wait_ms: float = Field(5.0, ge=0, le=1000)  # how long a request waits for companions

    # Guards
    max_body_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    # Bounded work (README "Limits"): images x width x height x steps per request (hires pass
    # included); the default, 8 images of 1024x1024 at 60 steps, holds one GPU under a minute.
    max_request_work: int = Field(8 * 1024 * 1024 * 60, ge=1)
    max_prompt_chars: int = Field(32000, ge=1)  # OpenAI's own limit for gpt-image prompts
    max_queue: int = Field(32, ge=1)  # generations queued or running per server; more get 503
    busy_retry_seconds: float = Field(5.0, gt=0)  # Retry-After on a 503 from a full queue
    generation_threads: int = Field(4, ge=1)  # worker threads for the engine (others stay free)

    # Jobs (the ModelsLab shape's processing / fetch flow)
    jobs_db: Path = Path(".sdgate/jobs.sqlite3")  # local job store; survives restarts
    # Cross-process state (shared/state.py): progress, flags, options, spam filter, claims.
    # A SQLite file both tiers open (":memory:" keeps it in this process only).
    state_db: Path = Path(".sdgate/state.sqlite3")
    sync_wait_seconds: float = Field(20.0, ge=0)  # answer "processing" after this long
    job_timeout_seconds: float = Field(600.0, gt=0)  # a job still processing then has failed
    spam_window_seconds: float = Field(30.0, ge=0)  # same key + same body within it: refused
    # Retention (shared/retention.py): finished jobs and local output files older than this are
    # deleted by an hourly sweep; 0 keeps them forever. (S3 objects: the bucket's expiry rule.)
    retention_days: float = Field(7.0, ge=0)
    retention_sweep_seconds: float = Field(3600.0, gt=0)

    # Webhooks (Standard Webhooks signing; whsec_<base64> secret; when unset, one is generated
    # on first start and kept in the state store: `sdgate webhook-secret` prints it)
    webhook_secret: str | None = None
    webhook_attempts: int = Field(5, ge=1, le=20)
    webhook_backoff_seconds: float = Field(2.0, ge=0)  # doubled after each failed attempt
    webhook_timeout_seconds: float = Field(10.0, gt=0)

    # Outbound URLs (webhooks, init_image / mask_image downloads): SSRF guard and caps
    allow_private_urls: bool = False  # true: loopback / private targets allowed (local dev)
    allowed_private_hosts: str = ""  # comma-separated ip:port exempt from the guard (tests)
    fetch_max_bytes: int = Field(20 * 1024 * 1024, ge=1)
    fetch_timeout_seconds: float = Field(20.0, gt=0)
    fetch_max_redirects: int = Field(5, ge=0, le=20)

    # Faces (docs/faces.md): face swap / restoration routes; off answers 503 on every one
    faces: bool = True
    faces_safety_checker: bool = False  # screen every face swap's source and target images

    # ModelsLab's enhance_prompt: these terms are appended to the prompt
    enhance_prompt_suffix: str = ("highly detailed, sharp focus, intricate details, "
                                  "professional lighting, best quality")

    # ModelsLab's text2img `upscale: "yes"` (2x): this model upscaler, by file stem or A1111 name,
    # from <models_dir>/RealESRGAN (or ESRGAN, ...); refused clearly while it is not installed.
    modelslab_upscaler: str = "realesr-general-x4v3"
    # ModelsLab's `multi_lingual: "yes"`: MarianMT folders (opus-mt-zh-en, ...) in this directory;
    # unset means <models_dir>/translator (shared/translation.py)
    translator_dir: Path | None = None

    # Key database (shared.accounts): SQLAlchemy URL, e.g. sqlite:///.sdgate/sdgate.db or
    # postgresql://...; empty means only SDGATE_API_KEYS is consulted.
    database_url: str = ""
    # Bootstrap admin keys (comma-separated) for the admin API and operator page, with a
    # database; stored keys get admin with `sdgate keys create --scopes admin`.
    admin_keys: str = ""
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per log line

    def private_host_allowlist(self) -> set[str]:
        """`allowed_private_hosts` as a set of "ip:port" strings."""
        return {h.strip() for h in self.allowed_private_hosts.split(",") if h.strip()}

    def admins(self) -> list[str]:
        """The configured admin keys as a list."""
        return [k.strip() for k in self.admin_keys.split(",") if k.strip()]

    def keys(self) -> list[str]:
        """The configured API keys as a list."""
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]
