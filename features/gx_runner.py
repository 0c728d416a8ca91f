"""Run an expectation suite on a DataFrame in an ephemeral great-expectations context.

The context lives only for one run: a pandas data source with a dataframe asset, the suite, a
validation definition, results in memory, and (optionally) a Data Docs site on the local
filesystem rendered from those results. Analytics and progress bars are switched off, so a run
never reaches the network and keeps the terminal quiet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import great_expectations as gx
import pandas as pd
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

# COMPLETE returns, for every row-level expectation, the positions of all failing rows.
RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "partial_unexpected_count": 20,
    "return_unexpected_index_query": False,
}
DOCS_SITE = "local_site"


@dataclass(frozen=True)
class SuiteRun:
    """What one run of a suite produced: GX's results and where its Data Docs are."""

    result: ExpectationSuiteValidationResult
    data_docs: Path | None


def run_suite(
    frame: pd.DataFrame,
    suite: gx.ExpectationSuite,
    data_docs_dir: Path | None = None,
    run_name: str | None = None,
    run_time: datetime | None = None,
) -> SuiteRun:
    """Validate ``frame`` against ``suite`` and, if ``data_docs_dir`` is given, render Data Docs.

    ``frame`` should have a default RangeIndex: GX reports failing rows by index label, which
    then equals the row's position. ``run_name`` and ``run_time`` identify the run in the Data
    Docs (and name its page), so the same batch validated at the same time gives the same files.
    """
    context = gx.get_context(mode="ephemeral", project_config=_quiet_config())
    if data_docs_dir is not None:
        context.add_data_docs_site(DOCS_SITE, _local_site(Path(data_docs_dir)))
    batch = (
        context.data_sources.add_pandas("telemetry")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole_batch")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="telemetry_gate", data=batch, suite=context.suites.add(suite))
    )
    result = definition.run(
        batch_parameters={"dataframe": frame},
        result_format=RESULT_FORMAT,
        run_id=RunIdentifier(run_name=run_name, run_time=run_time),
    )
    if data_docs_dir is None:
        return SuiteRun(result, None)
    context.build_data_docs(site_names=[DOCS_SITE])
    return SuiteRun(result, Path(data_docs_dir) / "index.html")


def _quiet_config() -> DataContextConfig:
    """An in-memory context configuration without analytics, progress bars or default sites."""
    return DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )


def _local_site(base_directory: Path) -> dict:
    """A Data Docs site written as static HTML under ``base_directory``."""
    return {
        "class_name": "SiteBuilder",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(base_directory.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
