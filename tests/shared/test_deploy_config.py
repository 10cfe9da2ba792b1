"""Deploy-time knobs and the start-up checks of a deployed app."""

import os

import pytest
from pydantic import ValidationError

from shared.config import Settings
from shared.deploy import DeployConfig, require_bucket, require_keys


def test_defaults_scale_to_zero(monkeypatch):
    for key in list(os.environ):
        if key.startswith("SDGATE_"):
            monkeypatch.delenv(key)
    c = DeployConfig()
    assert (c.gpu_min_containers, c.gpu_buffer_containers, c.web_min_containers) == (0, 0, 0)
    assert c.gpu_snapshot is False and c.gpu_scaledown_window == 60


def test_environment_overrides_and_bad_values_fail_at_deploy(monkeypatch):
    monkeypatch.setenv("SDGATE_GPU", "A10G")
    monkeypatch.setenv("SDGATE_GPU_SNAPSHOT", "1")
    c = DeployConfig()
    assert c.gpu == "A10G" and c.gpu_snapshot is True
    monkeypatch.setenv("SDGATE_GPU_SCALEDOWN_WINDOW", "1")  # Modal's range is 2..3600
    with pytest.raises(ValidationError):
        DeployConfig()


def test_container_env_carries_settings_but_never_keys():
    env = DeployConfig().container_env({"SDGATE_DEFAULT_MODEL": "sd15", "SDGATE_API_KEYS": "k",
                                        "SDGATE_MODELS_DIR": "/x", "SDGATE_UNKNOWN": "1",
                                        "HOME": "/root"})
    assert env["SDGATE_DEFAULT_MODEL"] == "sd15" and env["SDGATE_GPU_SNAPSHOT"] == "False"
    assert not {"SDGATE_API_KEYS", "SDGATE_MODELS_DIR", "SDGATE_UNKNOWN", "HOME"} & set(env)


def test_container_env_never_carries_a_secret_setting():
    secrets = {"SDGATE_API_KEYS": "k1", "SDGATE_WEBHOOK_SECRET": "whsec_c2VjcmV0",
               "SDGATE_DATABASE_URL": "postgresql://u:pw@db/sdgate"}
    env = DeployConfig().container_env({**secrets, "SDGATE_DEFAULT_MODEL": "sd15"})
    assert env["SDGATE_DEFAULT_MODEL"] == "sd15"
    assert not set(secrets) & set(env) and not set(secrets.values()) & set(env.values())
    assert DeployConfig.secrets_left_out(secrets) == sorted(secrets)


def test_require_keys():
    with pytest.raises(RuntimeError, match="SDGATE_ALLOW_OPEN"):
        require_keys(Settings(_env_file=None, api_keys=""))
    require_keys(Settings(_env_file=None, api_keys="k1"))
    require_keys(Settings(_env_file=None, allow_open=True))
    require_keys(Settings(_env_file=None, database_url="postgresql://db/sdgate"))  # stored keys


def test_require_bucket():
    with pytest.raises(RuntimeError, match="SDGATE_S3_BUCKET"):
        require_bucket(Settings(_env_file=None))
    require_bucket(Settings(_env_file=None, s3_bucket="b"))
