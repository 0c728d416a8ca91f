"""deploy/create_bucket.py (the stack's s3-init step) against a moto S3 server on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import ModuleType

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.deploy.conftest import load_deploy_script

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _load_script() -> ModuleType:
    return load_deploy_script("create_bucket")


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_creates_the_bucket_once(s3_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    script = _load_script()
    env = {"S3_ENDPOINT_URL": s3_endpoint, "S3_BUCKET": "mlflow-artifacts"}

    assert script.main(env) == 0
    assert "created" in capsys.readouterr().out
    assert script.main(env) == 0
    assert "already there" in capsys.readouterr().out

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["mlflow-artifacts"]


def test_missing_configuration_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert _load_script().main({"S3_BUCKET": "mlflow-artifacts"}) == 2
    assert "S3_ENDPOINT_URL" in capsys.readouterr().err
