"""infra.bucket against the test S3 server: idempotent, and it keeps what it does not own."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra import bucket

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def s3(s3_server):
    return bucket.client(s3_server, "us-east-1")


def args(endpoint, name, *extra):
    return ["--bucket", name, "--endpoint-url", endpoint, "--expire-days", "7",
            "--cors-origin", "https://app.example", *extra]


def test_run_twice_same_configuration(s3_server, s3, capsys):
    bucket.main(args(s3_server, "outputs-a", "--public-prefix"))
    first = bucket.describe(s3, "outputs-a")
    capsys.readouterr()
    settings = bucket.main(args(s3_server, "outputs-a", "--public-prefix"))
    assert bucket.describe(s3, "outputs-a") == first
    out = capsys.readouterr().out
    for line in ("bucket exists", "lifecycle unchanged", "cors unchanged", "access unchanged"):
        assert line in out
    [rule] = first["lifecycle"]
    assert rule["Expiration"] == {"Days": 7} and rule["Filter"] == {"Prefix": "sdgate/"}
    assert first["cors"][0]["AllowedOrigins"] == ["https://app.example"]
    [statement] = first["policy"]["Statement"]
    assert statement["Resource"] == "arn:aws:s3:::outputs-a/sdgate/*"
    assert first["public_access_block"]["BlockPublicPolicy"] is False
    assert settings["SDGATE_S3_PUBLIC_URL"] == f"{s3_server}/outputs-a"


def test_foreign_rules_are_kept_and_private_removes_public_read(s3_server, s3):
    s3.create_bucket(Bucket="outputs-b")
    logs = {"ID": "keep-logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
            "Expiration": {"Days": 90}}
    s3.put_bucket_lifecycle_configuration(Bucket="outputs-b",
                                          LifecycleConfiguration={"Rules": [logs]})
    bucket.main(args(s3_server, "outputs-b", "--public-prefix"))
    settings = bucket.main(args(s3_server, "outputs-b", "--private", "--expire-days", "3"))
    state = bucket.describe(s3, "outputs-b")
    assert {r["ID"] for r in state["lifecycle"]} == {"keep-logs", bucket.LIFECYCLE_ID}
    ours = next(r for r in state["lifecycle"] if r["ID"] == bucket.LIFECYCLE_ID)
    assert ours["Expiration"] == {"Days": 3}
    assert state["policy"] is None  # presigned URLs only
    assert "SDGATE_S3_PUBLIC_URL" not in settings


def test_command_line_module(s3_server, s3):
    out = subprocess.run([sys.executable, "-m", "infra.bucket",
                          *args(s3_server, "outputs-c")], cwd=ROOT, env=os.environ.copy(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "bucket created" in out.stdout and "SDGATE_S3_BUCKET=outputs-c" in out.stdout
    assert bucket.describe(s3, "outputs-c")["lifecycle"][0]["ID"] == bucket.LIFECYCLE_ID
