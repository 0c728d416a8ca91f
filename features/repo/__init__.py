"""The Feast feature repository of prewarm: one module per kind of definition, like the templates.

- ``entities``: ``user`` (join key ``user_id``) and ``region`` (join key ``region``).
- ``data_sources``: the offline Parquet files written by the ingest step, and the push sources
  through which the router feeds back its measurements and batch prediction its profiles.
- ``feature_views``: hourly resource use, location, latency, profile, region status, feedback,
  and each user's latest predicted profile (``user_predictions``).
- ``on_demand``: time encodings computed from the request (or training-row) timestamp.
- ``feature_services``: ``training`` and ``serving`` (user features), ``regions`` (region status),
  ``predictions`` (the predicted profile summary).
- ``definitions``: everything above in one list, which ``features.store`` applies.

The repository's *state* (``feature_store.yaml``, registry, offline files, SQLite online store)
lives under ``$PREWARM_HOME/feast``, never here, so two homes never touch. ``features.store``
writes that folder's ``feature_store.yaml`` from the settings, with a one-line module importing
these definitions, so the ``feast`` command works on it too::

    feast -c "$PREWARM_HOME/feast" plan     # or apply, materialize, serve, ...

The online store is SQLite by default; ``PREWARM_FEAST__ONLINE_STORE=redis`` (with
``PREWARM_FEAST__REDIS_CONNECTION_STRING`` and ``PREWARM_FEAST__PROJECT``, the Redis key suffix)
switches it to Redis; see ``core.settings.FeastSettings``.
"""
