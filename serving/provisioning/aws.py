"""The ``aws`` provider: warm capacity as EC2 instances, gp3 volumes and network interfaces.

One reservation is three EC2 resources in the AWS region behind its catalogue region
(``aws-eu-west-1`` -> ``eu-west-1``, via ``core.regions``):

- network: an elastic network interface in the region's subnet, with its security group
  (``settings.aws.placements``);
- compute: an instance of the cheapest type covering the spec's CPU, RAM and (baseline)
  bandwidth, launched on that interface; a warm one runs at its small warm size, or is stopped
  once launched (``settings.aws.warm_state``);
- storage: a gp3 volume with the spec's IOPS and a matching throughput, attached to it.

Creation is idempotent twice over: each create call carries a ``ClientToken`` derived from the
idempotency key (EC2 deduplicates the retry of a call whose answer was lost), and before creating
anything the provider looks the reservation up by its tags (a re-run after a crash; a moto
server, which ignores ``ClientToken``). Every resource is tagged by the call that creates it, so
a killed run leaves only tagged resources, which the re-run completes and ``release`` deletes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from core.regions import load_regions
from core.settings import AwsInstanceType, AwsPlacement, Settings, get_settings
from serving.provisioning import aws_tags
from serving.provisioning.aws_sizing import VolumeShape, choose_instance_type, volume_shape
from serving.provisioning.provider import (
    CapacityError,
    Kind,
    ProviderError,
    ProviderResource,
    ProvisionRequest,
    ResourceSpec,
    ResourceState,
)

log = logging.getLogger(__name__)

ALIVE_INSTANCE_STATES = frozenset({"pending", "running", "stopping", "stopped"})
GONE_VOLUME_STATES = frozenset({"deleting", "deleted"})
CAPACITY_ERROR_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "VolumeLimitExceeded",
        "MaxIOPSLimitExceeded",
        "InsufficientFreeAddressesInSubnet",
        "NetworkInterfaceLimitExceeded",
    }
)
NOT_FOUND_ERROR_CODES = frozenset({"InvalidVolume.NotFound", "InvalidNetworkInterfaceID.NotFound"})


@dataclass(frozen=True)
class Holding:
    """What EC2 holds for one reservation (or, without one, for all) in one AWS region."""

    region: str
    instances: list[dict]
    """Instances not (being) terminated, oldest first."""
    terminated: list[dict]
    """Instances shutting down or terminated."""
    volumes: list[dict]
    """Data volumes (kind ``storage``), oldest first."""
    root_volumes: list[dict]
    interfaces: list[dict]

    @property
    def empty(self) -> bool:
        """True when nothing at all, not even a terminated instance, carries the tags."""
        return not (self.instances or self.terminated or self.volumes or self.interfaces)


class AwsProvider:
    """Warm capacity on EC2 through boto3; see the module docstring for the resource model."""

    name = "aws"

    def __init__(
        self, settings: Settings | None = None, session: boto3.session.Session | None = None
    ) -> None:
        """Credentials come from ``session`` (default: boto3's chain: environment, role...)."""
        self._settings = settings or get_settings()
        self._aws = self._settings.aws
        self._session = session or boto3.session.Session()
        self._clients: dict[str, Any] = {}
        self._region_of: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> AwsProvider:
        """The provider configured by ``settings.aws`` (credentials from the environment)."""
        return cls(settings)

    def dispose(self) -> None:
        """Close the EC2 clients' connection pools."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # -- the Provider interface -------------------------------------------------------------

    def provision(self, request: ProvisionRequest) -> list[ProviderResource]:
        """Create the reservation's interface, instance and volume, or find them by tag."""
        region = self.aws_region(request.region)
        placement = self._placement(region)
        instance_type = choose_instance_type(request.spec, self._aws.instance_types)
        shape = volume_shape(request.spec.storage_iops, self._aws)
        tags = aws_tags.reservation_tags(request)
        ec2 = self.client(region)
        with _translated_errors(f"provision {request.reservation_id} in {region}"):
            held = self._holding(ec2, region, request.reservation_id)
            if held.terminated and not held.instances and request.attempt == 0:
                reason = held.terminated[-1].get("StateReason", {}).get("Message", "released")
                raise ProviderError(
                    f"reservation {request.reservation_id} was released or its instance died "
                    f"({reason}); the reconciler re-requests a live reservation it lost "
                    "(attempt > 0), anything else needs a new reservation id and idempotency key"
                )
            interface = _first(held.interfaces) or self._create_interface(
                ec2, request, placement, tags
            )
            found = _first(held.instances)
            instance = found or self._launch(
                ec2, request, placement, instance_type, interface, tags
            )
            volume = _first(held.volumes) or self._create_volume(
                ec2, request, shape, interface["AvailabilityZone"], tags
            )
            self._attach(ec2, instance, volume)
            held_warm = _is_warm(found) if found else request.warm
            if self._aws.warm_state == "stopped" and held_warm:
                self._stop(ec2, instance)
            self._region_of[request.reservation_id] = region
            return self._resources(self._holding(ec2, region, request.reservation_id))

    def scale(self, reservation_id: str, spec: ResourceSpec) -> list[ProviderResource]:
        """Resize the reservation to ``spec`` and take it into use (no longer warm).

        The instance type changes by stop, modify, start when the spec needs another one; a
        stopped instance is started; the volume's IOPS and throughput follow the spec.
        """
        instance_type = choose_instance_type(spec, self._aws.instance_types)
        volume_shape(spec.storage_iops, self._aws)  # refuse an impossible spec before acting
        with _translated_errors(f"scale {reservation_id}"):
            located = self._locate(reservation_id)
            if located is None or not located[1].instances:
                raise ProviderError(f"reservation {reservation_id} holds no instance to scale")
            region, held = located
            ec2 = self.client(region)
            instance = held.instances[0]
            self._resize_instance(ec2, instance, instance_type)
            for volume in held.volumes:
                self._resize_volume(ec2, volume, spec)
            ids = [instance["InstanceId"]]
            ids += [v["VolumeId"] for v in held.volumes + held.root_volumes]
            ids += [i["NetworkInterfaceId"] for i in held.interfaces]
            ec2.create_tags(
                Resources=ids, Tags=aws_tags.as_list(aws_tags.state_tags(spec, warm=False))
            )
            return self._resources(self._holding(ec2, region, reservation_id))

    def release(self, reservation_id: str) -> int:
        """Delete the volume (after detaching it), terminate the instance, delete the interface.

        Returns how many of the three were released by this call (0 when already gone).
        """
        with _translated_errors(f"release {reservation_id}"):
            located = self._locate(reservation_id)
            if located is None:
                return 0
            region, held = located
            ec2 = self.client(region)
            released = sum(self._delete_volume(ec2, volume) for volume in held.volumes)
            alive = [i["InstanceId"] for i in held.instances]
            if alive:
                ec2.terminate_instances(InstanceIds=alive)
                log.info("terminated %s of reservation %s", alive, reservation_id)
                released += len(alive)
            dying = alive + [
                i["InstanceId"] for i in held.terminated if i["State"]["Name"] != "terminated"
            ]
            if dying and held.interfaces:
                self._wait(ec2, "instance_terminated", InstanceIds=dying)
            released += sum(self._delete_interface(ec2, eni) for eni in held.interfaces)
            self._region_of.pop(reservation_id, None)
            return released

    def inventory(self) -> list[ProviderResource]:
        """Every managed interface, instance and volume not released, across ``aws.regions``."""
        resources: list[ProviderResource] = []
        for region in self._aws.regions:
            with _translated_errors(f"inventory of {region}"):
                resources += self._resources(self._holding(self.client(region), region, None))
        return resources

    # -- regions and clients ----------------------------------------------------------------

    def aws_region(self, code: str) -> str:
        """The AWS region behind catalogue region ``code``, if the provider may act there."""
        try:
            region = load_regions(self._settings.regions_file)[code]
        except KeyError as exc:
            raise ProviderError(f"unknown region {code!r}") from exc
        if region.provider != "aws":
            raise ProviderError(f"region {code!r} is a {region.provider} region, not an aws one")
        if region.provider_region not in self._aws.regions:
            raise ProviderError(
                f"aws region {region.provider_region!r} is not in settings.aws.regions "
                f"{list(self._aws.regions)}; add it (and its placement) to provision there"
            )
        return region.provider_region

    def client(self, region: str) -> Any:
        """The EC2 client of one AWS region: adaptive retries, the configured endpoint."""
        if region not in self._clients:
            config = Config(
                retries={"mode": "adaptive", "total_max_attempts": self._aws.max_attempts},
                user_agent_extra="prewarm",
            )
            self._clients[region] = self._session.client(
                "ec2", region_name=region, endpoint_url=self._aws.endpoint_url, config=config
            )
        return self._clients[region]

    def _placement(self, region: str) -> AwsPlacement:
        """The region's placement: ``aws.placements``, else ``aws.placements_file`` (read anew,
        since the tooling that writes it may run after this process started)."""
        placement = self._aws.placements.get(region) or read_placements_file(
            self._aws.placements_file
        ).get(region)
        if placement is None:
            raise ProviderError(
                f"no placement (AMI, subnet, security group) configured for aws region "
                f"{region!r}: set settings.aws.placements or settings.aws.placements_file"
            )
        return placement

    # -- finding what exists ----------------------------------------------------------------

    def _holding(self, ec2: Any, region: str, reservation_id: str | None) -> Holding:
        """Look the reservation's resources up by tag (all managed ones without an id)."""
        instances = [
            instance
            for page in ec2.get_paginator("describe_instances").paginate(
                Filters=aws_tags.filters(reservation_id, "compute")
            )
            for reservation in page["Reservations"]
            for instance in reservation["Instances"]
        ]
        volumes = [
            volume
            for page in ec2.get_paginator("describe_volumes").paginate(
                Filters=aws_tags.filters(reservation_id)
            )
            for volume in page["Volumes"]
            if volume["State"] not in GONE_VOLUME_STATES
        ]
        interfaces = [
            interface
            for page in ec2.get_paginator("describe_network_interfaces").paginate(
                Filters=aws_tags.filters(reservation_id, "network")
            )
            for interface in page["NetworkInterfaces"]
        ]
        instances.sort(key=lambda i: (i["LaunchTime"], i["InstanceId"]))
        volumes.sort(key=lambda v: (v["CreateTime"], v["VolumeId"]))
        interfaces.sort(key=lambda i: i["NetworkInterfaceId"])
        return Holding(
            region=region,
            instances=[i for i in instances if i["State"]["Name"] in ALIVE_INSTANCE_STATES],
            terminated=[i for i in instances if i["State"]["Name"] not in ALIVE_INSTANCE_STATES],
            volumes=[v for v in volumes if _kind(v) == "storage"],
            root_volumes=[v for v in volumes if _kind(v) == aws_tags.ROOT_VOLUME_KIND],
            interfaces=interfaces,
        )

    def _locate(self, reservation_id: str) -> tuple[str, Holding] | None:
        """The region holding the reservation (the one it was provisioned in, else a search)."""
        known = self._region_of.get(reservation_id)
        regions = ([known] if known else []) + [r for r in self._aws.regions if r != known]
        for region in regions:
            held = self._holding(self.client(region), region, reservation_id)
            if not held.empty:
                self._region_of[reservation_id] = region
                return region, held
        return None

    # -- creating ---------------------------------------------------------------------------

    def _create_interface(
        self, ec2: Any, request: ProvisionRequest, placement: AwsPlacement, tags: dict[str, str]
    ) -> dict:
        interface = ec2.create_network_interface(
            SubnetId=placement.subnet_id,
            Groups=[placement.security_group_id],
            Description=f"prewarm reservation {request.reservation_id}",
            ClientToken=aws_tags.client_token(
                request.idempotency_key, "network", request.attempt
            ),
            TagSpecifications=[aws_tags.tag_specification("network-interface", tags, "network")],
        )["NetworkInterface"]
        log.info("created %s for %s", interface["NetworkInterfaceId"], request.reservation_id)
        return interface

    def _launch(
        self,
        ec2: Any,
        request: ProvisionRequest,
        placement: AwsPlacement,
        instance_type: AwsInstanceType,
        interface: dict,
        tags: dict[str, str],
    ) -> dict:
        instance = ec2.run_instances(
            ImageId=placement.image_id,
            InstanceType=instance_type.name,
            MinCount=1,
            MaxCount=1,
            ClientToken=aws_tags.client_token(
                request.idempotency_key, "compute", request.attempt
            ),
            NetworkInterfaces=[
                {"DeviceIndex": 0, "NetworkInterfaceId": interface["NetworkInterfaceId"]}
            ],
            TagSpecifications=[
                aws_tags.tag_specification("instance", tags, "compute"),
                aws_tags.tag_specification("volume", tags, aws_tags.ROOT_VOLUME_KIND),
            ],
        )["Instances"][0]
        if instance["State"]["Name"] not in ALIVE_INSTANCE_STATES:
            raise ProviderError(
                f"EC2 answered the launch of {request.reservation_id} with "
                f"{instance['State']['Name']} instance {instance['InstanceId']}: its idempotency "
                "key belongs to a released reservation"
            )
        log.info(
            "launched %s (%s) for %s",
            instance["InstanceId"],
            instance_type.name,
            request.reservation_id,
        )
        return instance

    def _create_volume(
        self,
        ec2: Any,
        request: ProvisionRequest,
        shape: VolumeShape,
        zone: str,
        tags: dict[str, str],
    ) -> dict:
        volume = ec2.create_volume(
            AvailabilityZone=zone,
            Size=shape.size_gib,
            VolumeType="gp3",
            Iops=shape.iops,
            Throughput=shape.throughput_mibps,
            ClientToken=aws_tags.client_token(
                request.idempotency_key, "storage", request.attempt
            ),
            TagSpecifications=[aws_tags.tag_specification("volume", tags, "storage")],
        )
        log.info("created %s for %s", volume["VolumeId"], request.reservation_id)
        return volume

    def _attach(self, ec2: Any, instance: dict, volume: dict) -> None:
        """Attach the data volume to the instance unless it already is."""
        instance_id, volume_id = instance["InstanceId"], volume["VolumeId"]
        attached_to = {
            a["InstanceId"]
            for a in volume.get("Attachments", [])
            if a["State"] in ("attaching", "attached")
        }
        if instance_id in attached_to:
            return
        if attached_to:
            raise ProviderError(f"volume {volume_id} is attached to {sorted(attached_to)}")
        self._wait(ec2, "volume_available", VolumeIds=[volume_id])
        self._settle(ec2, instance)
        ec2.attach_volume(
            Device=self._aws.volume_device, InstanceId=instance_id, VolumeId=volume_id
        )

    # -- changing ---------------------------------------------------------------------------

    def _settle(self, ec2: Any, instance: dict) -> str:
        """Wait out a transition (pending, stopping); returns the instance's settled state."""
        state = instance["State"]["Name"]
        if state == "pending":
            self._wait(ec2, "instance_running", InstanceIds=[instance["InstanceId"]])
            return "running"
        if state == "stopping":
            self._wait(ec2, "instance_stopped", InstanceIds=[instance["InstanceId"]])
            return "stopped"
        return state

    def _stop(self, ec2: Any, instance: dict, *, wait: bool = False) -> None:
        if self._settle(ec2, instance) == "running":
            ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
            if wait:
                self._wait(ec2, "instance_stopped", InstanceIds=[instance["InstanceId"]])

    def _resize_instance(self, ec2: Any, instance: dict, instance_type: AwsInstanceType) -> None:
        """Give the instance ``instance_type`` (stop, modify, start when it differs); run it."""
        instance_id = instance["InstanceId"]
        if instance["InstanceType"] != instance_type.name:
            self._stop(ec2, instance, wait=True)
            ec2.modify_instance_attribute(
                InstanceId=instance_id, InstanceType={"Value": instance_type.name}
            )
            log.info("resized %s to %s", instance_id, instance_type.name)
            ec2.start_instances(InstanceIds=[instance_id])
        elif self._settle(ec2, instance) == "stopped":
            ec2.start_instances(InstanceIds=[instance_id])

    def _resize_volume(self, ec2: Any, volume: dict, spec: ResourceSpec) -> None:
        shape = volume_shape(spec.storage_iops, self._aws, min_size_gib=volume["Size"])
        current = (volume["Size"], volume.get("Iops"), volume.get("Throughput"))
        if current != (shape.size_gib, shape.iops, shape.throughput_mibps):
            ec2.modify_volume(
                VolumeId=volume["VolumeId"],
                Size=shape.size_gib,
                Iops=shape.iops,
                Throughput=shape.throughput_mibps,
            )

    # -- deleting ---------------------------------------------------------------------------

    def _delete_volume(self, ec2: Any, volume: dict) -> int:
        volume_id = volume["VolumeId"]
        for attachment in volume.get("Attachments", []):
            if attachment["State"] in ("attaching", "attached"):
                # Forced: the data is being thrown away, and a volume still mounted by a
                # running workload would otherwise stay "busy" and never detach.
                ec2.detach_volume(
                    VolumeId=volume_id,
                    InstanceId=attachment["InstanceId"],
                    Device=attachment["Device"],
                    Force=True,
                )
        self._wait(ec2, "volume_available", VolumeIds=[volume_id])
        if not _ignoring_not_found(ec2.delete_volume, VolumeId=volume_id):
            return 0
        log.info("deleted %s", volume_id)
        return 1

    def _delete_interface(self, ec2: Any, interface: dict) -> int:
        interface_id = interface["NetworkInterfaceId"]
        if not _ignoring_not_found(ec2.delete_network_interface, NetworkInterfaceId=interface_id):
            return 0
        log.info("deleted %s", interface_id)
        return 1

    def _wait(self, ec2: Any, waiter: str, **kwargs: Any) -> None:
        config = {
            "Delay": self._aws.waiter_delay_seconds,
            "MaxAttempts": self._aws.waiter_max_attempts,
        }
        ec2.get_waiter(waiter).wait(**kwargs, WaiterConfig=config)

    # -- describing -------------------------------------------------------------------------

    def _resources(self, held: Holding) -> list[ProviderResource]:
        resources = [
            _resource(held.region, i["InstanceId"], "compute", _instance_state(i), i)
            for i in held.instances
        ]
        resources += [
            _resource(held.region, v["VolumeId"], "storage", _volume_state(v), v)
            for v in held.volumes
        ]
        resources += [
            _resource(held.region, i["NetworkInterfaceId"], "network", _interface_state(i), i)
            for i in held.interfaces
        ]
        return resources


def read_placements_file(path: Path | None) -> dict[str, AwsPlacement]:
    """Placements per AWS region from a JSON file; none when there is no file (yet)."""
    if path is None or not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {region: AwsPlacement.model_validate(item) for region, item in raw.items()}
    except (ValueError, AttributeError) as error:  # JSON or validation errors, a non-object
        raise ProviderError(
            f"{path}: not a JSON object of placements per region: {error}"
        ) from None


def _resource(
    region: str, resource_id: str, kind: Kind, state: ResourceState, described: dict
) -> ProviderResource:
    tags = aws_tags.as_dict(described.get("Tags") or described.get("TagSet"))
    ready_at = None
    if state in ("warm", "active"):
        ready_at = described.get("LaunchTime") or described.get("CreateTime")
    return ProviderResource(
        resource_id=resource_id,
        reservation_id=tags.get(aws_tags.RESERVATION, ""),
        user_id=tags.get(aws_tags.USER, ""),
        region=f"aws-{region}",
        kind=kind,
        state=state,
        spec=aws_tags.spec_from_tags(tags, kind),
        ready_at=ready_at,
        tags=tags,
    )


def _instance_state(instance: dict) -> ResourceState:
    state = instance["State"]["Name"]
    if state == "pending":
        return "provisioning"
    if state in ("stopping", "stopped"):
        return "warm"
    return "warm" if _is_warm(instance) else "active"


def _volume_state(volume: dict) -> ResourceState:
    state = volume["State"]
    if state == "creating":
        return "provisioning"
    if state == "error":
        return "failed"
    return "warm" if _is_warm(volume) else "active"


def _interface_state(interface: dict) -> ResourceState:
    if interface.get("Status") == "pending":
        return "provisioning"
    return "warm" if _is_warm(interface) else "active"


def _is_warm(described: dict) -> bool:
    tags = aws_tags.as_dict(described.get("Tags") or described.get("TagSet"))
    return tags.get(aws_tags.WARM) == "true"


def _kind(described: dict) -> str | None:
    return aws_tags.as_dict(described.get("Tags") or described.get("TagSet")).get(aws_tags.KIND)


def _first(items: list[dict]) -> dict | None:
    return items[0] if items else None


def _ignoring_not_found(call: Any, **kwargs: Any) -> bool:
    """Make a delete call; False when EC2 says the resource is already gone."""
    try:
        call(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in NOT_FOUND_ERROR_CODES:
            return False
        raise
    return True


@contextmanager
def _translated_errors(doing: str) -> Iterator[None]:
    """Turn boto errors (after botocore's retries) into ProviderError / CapacityError."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "Unknown")
        kind = CapacityError if code in CAPACITY_ERROR_CODES else ProviderError
        message = f"{doing}: EC2 {exc.operation_name} failed: {code}: {error.get('Message', '')}"
        raise kind(message) from exc
    except WaiterError as exc:
        raise ProviderError(f"{doing}: gave up waiting: {exc}") from exc
    except BotoCoreError as exc:
        raise ProviderError(f"{doing}: {exc}") from exc
