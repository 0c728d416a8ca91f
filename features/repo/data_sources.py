"""Where the features come from: Parquet files written by the ingest step, and push sources.

The predictions' push source is written by batch prediction, one row per user and run; its
offline copy is upserted once per run, by the step that finalises it (concurrent shards never
write the same file).

File paths are relative to the Feast repository folder (``$PREWARM_HOME/feast``), which Feast
resolves them against, so the registry is the same for every home and a home can be moved.
``features.store.write_offline`` writes these files; ``created`` (when a row was written)
breaks ties between rows with the same entity and ``event_timestamp``.
"""

from feast import FileSource, PushSource

from features.aggregate import REGION_KEY, TIMESTAMP, USER_KEY

OFFLINE_FOLDER = "offline"
CREATED = "created"


def _file_source(table: str, description: str) -> FileSource:
    return FileSource(
        name=table,
        path=f"{OFFLINE_FOLDER}/{table}.parquet",
        timestamp_field=TIMESTAMP,
        created_timestamp_column=CREATED,
        description=description,
    )


user_hourly_source = _file_source(
    "user_hourly", "Hourly aggregates per user (features.aggregate.hourly_user_features)."
)
user_profile_source = _file_source(
    "user_profile", "Slowly changing user profiles (features.aggregate.user_profiles)."
)
region_status_source = _file_source(
    "region_status", "Region utilisation and prices (features.aggregate.region_status)."
)
router_feedback_source = _file_source(
    "router_feedback", "The router's feedback metrics, as pushed (offline copy)."
)

user_predictions_source = _file_source(
    "user_predictions", "Each user's predicted profile summary, as pushed (offline copy)."
)

router_feedback_push = PushSource(
    name="router_feedback_push",
    batch_source=router_feedback_source,
    description="The router pushes its measurements here after each decision window.",
)

user_predictions_push = PushSource(
    name="user_predictions_push",
    batch_source=user_predictions_source,
    description="Batch prediction (serving.predict) pushes each user's latest profile here.",
)

# Offline table name -> (its file source, the entity join key of its rows).
OFFLINE_TABLES: dict[str, tuple[FileSource, str]] = {
    "user_hourly": (user_hourly_source, USER_KEY),
    "user_profile": (user_profile_source, USER_KEY),
    "region_status": (region_status_source, REGION_KEY),
    "router_feedback": (router_feedback_source, USER_KEY),
    "user_predictions": (user_predictions_source, USER_KEY),
}
