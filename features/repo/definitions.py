"""Every Feast object of the repository, by name and in one list.

``features.store`` applies :data:`DEFINITIONS`; the ``feast`` command, which collects the
module-level objects of the repository's files, finds each of them here by name.
"""

from features.repo.data_sources import (
    region_status_source,
    router_feedback_push,
    router_feedback_source,
    user_hourly_source,
    user_predictions_push,
    user_predictions_source,
    user_profile_source,
)
from features.repo.entities import region, user
from features.repo.feature_services import predictions, regions, serving, training
from features.repo.feature_views import (
    region_status,
    router_feedback,
    user_latency,
    user_location,
    user_predictions,
    user_profile,
    user_resources,
)
from features.repo.on_demand import request_time, time_encodings

DEFINITIONS = [
    user,
    region,
    user_hourly_source,
    user_profile_source,
    region_status_source,
    router_feedback_source,
    router_feedback_push,
    user_predictions_source,
    user_predictions_push,
    request_time,
    user_resources,
    user_location,
    user_latency,
    user_profile,
    router_feedback,
    region_status,
    user_predictions,
    time_encodings,
    training,
    serving,
    regions,
    predictions,
]
