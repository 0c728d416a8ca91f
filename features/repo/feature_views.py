"""The feature views: named groups of features, each read from one source and keyed by entity.

Column names come from ``features.aggregate`` (the tables' single source of truth). Each view's
TTL is how old its latest row may be and still be joined (training) or served; the values come
from ``Settings.feast`` as read when this module is first imported.
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Bool, FeastType, Float64, Int64, String

from core.schema import RESOURCE_COLUMNS
from core.settings import get_settings
from features.aggregate import (
    ACTIVITY_FEATURES,
    APP_SHARE_FEATURES,
    LATENCY_FEATURES,
    LOCATION_FEATURES,
    PROFILE_FEATURES,
    REGION_STATUS_FEATURES,
    RESOURCE_FEATURES,
)
from features.repo.data_sources import (
    region_status_source,
    router_feedback_push,
    user_hourly_source,
    user_predictions_push,
    user_profile_source,
)
from features.repo.entities import region, user

# Feast types of the columns that are not float64.
_TYPES: dict[str, FeastType] = {
    "data_access_count": Int64,
    "sample_count": Int64,
    "travel_flag": Bool,
    "serving_region": String,
    "last_region": String,
    "role": String,
    "home_region": String,
    "feedback_migrations": Int64,
    "region_next": String,
    "cold_start": Bool,
    "model_version": String,
    "feature_timestamp": String,
    "prediction_source": String,
    "horizon_hours": Int64,
}

FEEDBACK_FEATURES: tuple[str, ...] = (
    "feedback_latency_ms",
    "feedback_slo_violation_share",
    "feedback_migrations",
)

# One row per user, pushed by batch prediction: the next hour's quantiles and the peak p90 over
# the horizon per resource, the most likely region next hour, and where the prediction came from
# (``feature_timestamp`` is ISO 8601 UTC text; the full profile is in the predictions store).
PREDICTION_FEATURES: tuple[str, ...] = (
    *(f"{r}_{q}" for r in RESOURCE_COLUMNS for q in ("p50_next", "p90_next", "p90_peak")),
    "region_next",
    "region_next_probability",
    "cold_start",
    "model_version",
    "feature_timestamp",
    "prediction_source",
    "horizon_hours",
)


def _fields(names: tuple[str, ...]) -> list[Field]:
    return [Field(name=name, dtype=_TYPES.get(name, Float64)) for name in names]


_ttl = get_settings().feast
_hourly_ttl = timedelta(hours=_ttl.hourly_ttl_hours)

user_resources = FeatureView(
    name="user_resources",
    entities=[user],
    ttl=_hourly_ttl,
    schema=_fields(RESOURCE_FEATURES + ACTIVITY_FEATURES + APP_SHARE_FEATURES),
    source=user_hourly_source,
    online=True,
    description="Per user and hour: mean and p95 of each resource, activity and app mix.",
)

user_location = FeatureView(
    name="user_location",
    entities=[user],
    ttl=_hourly_ttl,
    schema=_fields(LOCATION_FEATURES),
    source=user_hourly_source,
    online=True,
    description="Last position in the hour, distance from home, travel flag, nearest region.",
)

user_latency = FeatureView(
    name="user_latency",
    entities=[user],
    ttl=_hourly_ttl,
    schema=_fields(LATENCY_FEATURES),
    source=user_hourly_source,
    online=True,
    description="Round trip to the serving region in the hour (mean, p95) and that region.",
)

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(0),  # a profile row stays valid until the next one replaces it
    schema=_fields(PROFILE_FEATURES),
    source=user_profile_source,
    online=True,
    description="Role, home position and home region, as known at each row's timestamp.",
)

region_status = FeatureView(
    name="region_status",
    entities=[region],
    ttl=timedelta(hours=_ttl.region_ttl_hours),
    schema=_fields(REGION_STATUS_FEATURES),
    source=region_status_source,
    online=True,
    description="Background utilisation, free vCPU and unit prices of each region.",
)

router_feedback = FeatureView(
    name="router_feedback",
    entities=[user],
    ttl=timedelta(hours=_ttl.feedback_ttl_hours),
    schema=_fields(FEEDBACK_FEATURES),
    source=router_feedback_push,
    online=True,
    description="The router's latest measurements for the user: latency, SLO misses, moves.",
)

user_predictions = FeatureView(
    name="user_predictions",
    entities=[user],
    ttl=timedelta(hours=get_settings().predict.max_prediction_age_hours),
    schema=_fields(PREDICTION_FEATURES),
    source=user_predictions_push,
    online=True,
    description="The user's latest predicted profile (summary), pushed by batch prediction.",
)

USER_VIEWS: tuple[FeatureView, ...] = (
    user_resources,
    user_location,
    user_latency,
    user_profile,
    router_feedback,
)
ALL_VIEWS: tuple[FeatureView, ...] = (*USER_VIEWS, region_status, user_predictions)
