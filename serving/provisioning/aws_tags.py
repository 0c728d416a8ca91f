"""The tags the ``aws`` provider writes on everything it creates, and how they are read back.

Tags are how the provider finds its own resources again: a re-run after a crash looks a
reservation up by its tags before creating anything, ``inventory`` lists everything tagged
``prewarm:managed=true``, and the IAM policy (``iam_policy.json``) only lets the provider touch
resources carrying that tag. Every resource is tagged in the same call that creates it, so no
resource can exist untagged, even if the process dies right after the call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC

from serving.provisioning.provider import Kind, ProviderError, ProvisionRequest, ResourceSpec

MANAGED = "prewarm:managed"
RESERVATION = "prewarm:reservation"
USER = "prewarm:user"
EXPIRES_AT = "prewarm:expires-at"
IDEMPOTENCY_KEY = "prewarm:idempotency-key"
KIND = "prewarm:kind"
WARM = "prewarm:warm"
SPEC = {
    "cpu_cores": "prewarm:cpu-cores",
    "ram_gb": "prewarm:ram-gb",
    "storage_iops": "prewarm:storage-iops",
    "network_mbps": "prewarm:network-mbps",
}
ROOT_VOLUME_KIND = "root"
"""Kind tag of an instance's boot volume: it belongs to the compute resource, dies with it."""


def reservation_tags(request: ProvisionRequest) -> dict[str, str]:
    """Tags shared by every resource of one reservation (without the per-resource kind)."""
    if request.expires_at.tzinfo is None:
        raise ProviderError(
            f"reservation {request.reservation_id}: expires_at must be timezone-aware"
        )
    return {
        MANAGED: "true",
        RESERVATION: request.reservation_id,
        USER: request.user_id,
        EXPIRES_AT: request.expires_at.astimezone(UTC).isoformat(),
        IDEMPOTENCY_KEY: request.idempotency_key,
        **state_tags(request.spec, warm=request.warm),
    }


def state_tags(spec: ResourceSpec, *, warm: bool) -> dict[str, str]:
    """The tags that change when a reservation is scaled: its spec and whether it is warm."""
    tags = {tag: f"{getattr(spec, field):g}" for field, tag in SPEC.items()}
    tags[WARM] = "true" if warm else "false"
    return tags


def tag_specification(resource_type: str, tags: Mapping[str, str], kind: str) -> dict:
    """A ``TagSpecifications`` entry tagging a resource at creation with ``tags`` and ``kind``."""
    return {
        "ResourceType": resource_type,
        "Tags": [{"Key": k, "Value": v} for k, v in {**tags, KIND: kind}.items()],
    }


def as_dict(tag_list: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    """EC2's ``[{"Key": k, "Value": v}]`` as a plain dict."""
    return {tag["Key"]: tag["Value"] for tag in tag_list or ()}


def as_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """A plain dict as EC2's ``[{"Key": k, "Value": v}]``."""
    return [{"Key": k, "Value": v} for k, v in tags.items()]


KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "compute": ("cpu_cores", "ram_gb"),
    "storage": ("storage_iops",),
    "network": ("network_mbps",),
}
"""The part of a reservation's spec each kind of resource carries (as the local provider)."""


def spec_from_tags(tags: Mapping[str, str], kind: Kind) -> ResourceSpec:
    """The part of the reservation's spec (as tagged) that a resource of ``kind`` carries."""
    values = dict.fromkeys(SPEC, 0.0)
    for field in KIND_FIELDS[kind]:
        try:
            values[field] = float(tags.get(SPEC[field], 0.0))
        except ValueError:
            values[field] = 0.0
    return ResourceSpec(**values)


def filters(reservation_id: str | None = None, kind: str | None = None) -> list[dict]:
    """EC2 ``Filters`` selecting managed resources, optionally of one reservation and kind."""
    wanted = {MANAGED: "true", RESERVATION: reservation_id, KIND: kind}
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in wanted.items() if v is not None]


def client_token(idempotency_key: str, kind: Kind, attempt: int = 0) -> str:
    """A ``ClientToken`` (at most 64 ASCII characters) derived from the idempotency key.

    Each re-request ``attempt`` after a loss gets its own token: EC2 would answer a reused token
    with the resource it created the first time, which is the one that was lost.
    """
    suffix = f"/{attempt}" if attempt else ""
    return hashlib.sha256(f"prewarm/{kind}/{idempotency_key}{suffix}".encode()).hexdigest()
