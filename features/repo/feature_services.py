"""Feature services: the versioned sets of features a model is trained on and served with.

``training`` and ``serving`` hold the same user features today; they are separate services so
that serving can be pinned while a new training set is tried. Region status is keyed by region,
not user, and is read by placement through the ``regions`` service. ``predictions`` serves each
user's latest predicted profile summary (pushed by batch prediction); it is an output of the
model, never one of its inputs.
"""

from feast import FeatureService

from features.repo.feature_views import USER_VIEWS, region_status, user_predictions
from features.repo.on_demand import time_encodings

USER_FEATURES = [*USER_VIEWS, time_encodings]

training = FeatureService(
    name="training",
    features=USER_FEATURES,
    description="User features for building training sets (get_historical_features).",
)

serving = FeatureService(
    name="serving",
    features=USER_FEATURES,
    description="User features for online prediction (get_online_features).",
)

regions = FeatureService(
    name="regions",
    features=[region_status],
    description="Region status for placement: utilisation, free vCPU, prices.",
)

predictions = FeatureService(
    name="predictions",
    features=[user_predictions],
    description="Each user's latest predicted profile summary (serving.predict pushes it).",
)
