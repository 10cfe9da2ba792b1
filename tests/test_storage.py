"""Storage backends: local files and S3 over real HTTP (moto server)."""

import httpx
import pytest

from shared.config import Settings
from shared.errors import NotFound, StorageFailed
from shared.storage import LocalStorage, S3Storage, image_key, new_job_id


def test_keys_are_unique_per_job_and_image():
    a, b = new_job_id(), new_job_id()
    keys = {image_key(j, i, "png") for j in (a, b) for i in range(3)}
    assert len(keys) == 6


def test_local_put_and_path_guard(tmp_path):
    s = LocalStorage(tmp_path, "http://host:1/")
    url = s.put("2026/01/01/job/0.png", b"png-bytes", "image/png")
    assert url == "http://host:1/files/2026/01/01/job/0.png"
    assert (tmp_path / "2026/01/01/job/0.png").read_bytes() == b"png-bytes"
    for bad in ("../etc/passwd", "a/../../x", "/abs"):
        with pytest.raises(NotFound):
            s.path_for(bad)


def s3(endpoint, bucket, **kw) -> S3Storage:
    return S3Storage(Settings(_env_file=None, s3_bucket=bucket, s3_endpoint_url=endpoint,
                              s3_region="us-east-1", **kw))


def test_s3_presigned_url_fetches_object_with_content_type(s3_bucket):
    endpoint, bucket = s3_bucket
    store = s3(endpoint, bucket, s3_presign_seconds=600)
    url = store.put("k/0.png", b"\x89PNG-data", "image/png")
    assert "X-Amz-Expires=600" in url
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"\x89PNG-data"
    head = store.client.head_object(Bucket=bucket, Key="sdgate/k/0.png")
    assert head["ContentType"] == "image/png"


def test_s3_public_base_url(s3_bucket):
    endpoint, bucket = s3_bucket
    store = s3(endpoint, bucket, s3_public_url="https://cdn.example.com/")
    assert store.put("k/1.webp", b"x", "image/webp") == "https://cdn.example.com/sdgate/k/1.webp"


def test_presign_expiry_is_capped_at_7_days():
    with pytest.raises(ValueError):
        Settings(_env_file=None, s3_presign_seconds=8 * 24 * 3600)


def test_s3_down_fails_cleanly_after_retries():
    from conftest import free_port

    store = s3(f"http://127.0.0.1:{free_port()}", "nobucket", s3_upload_attempts=2)
    with pytest.raises(StorageFailed, match="could not upload"):
        store.put("k/0.png", b"x", "image/png")


def test_key_depends_only_on_the_job():
    assert image_key("job1", 2, "png") == image_key("job1", 2, "png") == "job1/2.png"
