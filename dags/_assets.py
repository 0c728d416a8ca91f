"""The Assets that connect prewarm's DAGs (data-aware scheduling).

Kept free of heavy imports: DAG files import this at parse time. Airflow puts the DAGs folder
on sys.path, hence the plain `from _assets import ...` in the DAG files.
"""

from __future__ import annotations

from airflow.sdk import Asset

# Emitted by telemetry_ingest when fresh hourly features are materialised to the online store.
FEATURES = Asset("prewarm://features/hourly", group="prewarm")
