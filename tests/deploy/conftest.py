"""Fixtures of the deploy tests: the moto EC2 server on loopback (shared with the aws tests)."""

from tests.serving.provisioning.aws_moto import moto_server  # noqa: F401 (a fixture)
