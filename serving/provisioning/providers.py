"""The configured provider: the local simulated cloud, or AWS."""

from __future__ import annotations

from core.settings import Settings
from serving.provisioning.clock import Clock, system_clock
from serving.provisioning.provider import Provider


def make_provider(settings: Settings, clock: Clock = system_clock) -> Provider:
    """The provider named by ``settings.provisioning.provider`` (boto3 is imported only for aws).

    ``clock`` drives the local provider's boot delays; AWS keeps its own time.
    """
    if settings.provisioning.provider == "local":
        from serving.provisioning.local import LocalProvider

        return LocalProvider.from_settings(settings, clock)
    from serving.provisioning.aws import AwsProvider

    return AwsProvider.from_settings(settings)
