"""Where result images go: local files served by the app itself, or any S3 protocol bucket.

`put()` returns a URL only after the object is written; a failed upload raises StorageFailed.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Protocol

from shared.config import Settings
from shared.errors import NotFound, StorageFailed

log = logging.getLogger(__name__)

LOCAL_ROUTE = "/files"
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


def new_job_id() -> str:
    """A unique, URL-safe id for one job."""
    return uuid.uuid4().hex


def image_key(job_id: str, index: int, ext: str) -> str:
    """Object key of image `index` of a job: unique per job and image, and a function of the job
    alone (no date), so the URLs promised before a job runs (future_links) are the final ones."""
    return f"{job_id}/{index}.{ext}"


class Storage(Protocol):
    """One interface for every backend."""

    def url_for(self, key: str) -> str:
        """The URL an object at `key` has (or will have, once written)."""

    def put(self, key: str, data: bytes, content_type: str) -> str:
        """Write the object and return its URL."""

    def purge(self, before: float) -> int:
        """Delete objects written before `before` (unix time); how many went."""


class LocalStorage:
    """Files under a directory, served by the app at LOCAL_ROUTE."""

    def __init__(self, root: Path, base_url: str):
        self.root = Path(root)
        self.base_url = base_url.rstrip("/")

    def url_for(self, key: str) -> str:
        return f"{self.base_url}{LOCAL_ROUTE}/{key}"

    def path_for(self, key: str) -> Path:
        """Filesystem path of a key; refuses keys that would escape the root."""
        if not _SAFE_KEY.match(key) or ".." in key.split("/"):
            raise NotFound(f"no such file: {key}")
        return self.root / key

    def put(self, key: str, data: bytes, content_type: str) -> str:
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a reader never sees half a file.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            raise StorageFailed(f"could not write result file: {e}") from e
        return self.url_for(key)


    def purge(self, before: float) -> int:
        """Delete files last written before `before` (unix time); how many went."""
        gone = 0
        if not self.root.is_dir():
            return 0
        for path in sorted(self.root.rglob("*"), reverse=True):  # files before their folders
            try:
                if path.is_file() and path.stat().st_mtime < before:
                    path.unlink()
                    gone += 1
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
            except OSError:  # another sweep or writer got there first
                continue
        return gone


class S3Storage:
    """An S3 protocol bucket through boto3: AWS, R2, MinIO, or a test server."""

    def __init__(self, settings: Settings):
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.public_url = settings.s3_public_url.rstrip("/") if settings.s3_public_url else None
        self.presign_seconds = settings.s3_presign_seconds
        # botocore's "standard" mode retries throttling, 5xx and connection errors with backoff.
        config = Config(
            retries={"max_attempts": settings.s3_upload_attempts, "mode": "standard"},
            connect_timeout=5, read_timeout=30, signature_version="s3v4",
        )
        self.client = boto3.client("s3", region_name=settings.s3_region,
                                   endpoint_url=settings.s3_endpoint_url, config=config)

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def url_for(self, key: str) -> str:
        obj = self._object_key(key)
        if self.public_url:
            return f"{self.public_url}/{obj}"
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": obj},
            ExpiresIn=self.presign_seconds)

    def put(self, key: str, data: bytes, content_type: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._object_key(key), Body=data,
                                   ContentType=content_type)
        except (BotoCoreError, ClientError) as e:
            log.warning("upload of %s failed: %s", key, e)
            raise StorageFailed(f"could not upload the result to object storage: {e}") from e
        return self.url_for(key)

    def purge(self, before: float) -> int:
        """Nothing: objects expire by the bucket's own lifecycle rule (`make bucket
        EXPIRE_DAYS=...`), without listing the bucket from here."""
        return 0


def make_storage(settings: Settings) -> Storage:
    """The storage backend the settings ask for."""
    if settings.s3_bucket:
        return S3Storage(settings)
    return LocalStorage(settings.output_dir, settings.public_url)
