"""The entities features are keyed by: a user, and a cloud region."""

from feast import Entity, ValueType

from features.aggregate import REGION_KEY, USER_KEY

user = Entity(
    name="user",
    join_keys=[USER_KEY],
    value_type=ValueType.STRING,
    description="A user of the virtual desktop service (pseudonymous id from the telemetry).",
)

region = Entity(
    name="region",
    join_keys=[REGION_KEY],
    value_type=ValueType.STRING,
    description="A cloud region of the region catalogue (its code, e.g. aws-eu-west-1).",
)
