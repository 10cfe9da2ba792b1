"""Settings, read from SDGATE_* environment variables (flags of `sdgate serve` override them)."""

from __future__ import annotations

from pathlib import Path

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

    # Guards
    max_body_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096

    def keys(self) -> list[str]:
        """The configured API keys as a list."""
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]
