"""The validation gate: telemetry batches are checked by great-expectations before they are stored.

A batch first passes structural checks (readable, not empty, exactly the schema's columns and
dtypes); then the suite of :mod:`features.expectations` runs on it in GX, row by row. Rows that
fail any expectation go to quarantine with a ``reasons`` column naming every failed expectation;
the others are the valid part. A batch is rejected as a whole (:class:`BatchRejected`, nothing
of it valid) when it is structurally broken, when a table-level expectation fails, or when the
share of bad rows exceeds ``max_bad_fraction``. Either way no row is lost:
``rows_in == rows_valid + rows_quarantined``.

:func:`validate_batch` is the file-level entry point (used by ``prewarm validate`` and the ingest
DAG): it writes ``out/valid/`` (a telemetry dataset), ``out/quarantine/``, ``out/report.json`` and
``out/data_docs/`` (GX Data Docs), replacing what a previous run left there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from great_expectations.core import ExpectationSuiteValidationResult

from core.io import clear_dataset, part_path, write_telemetry_part
from core.schema import ENTITY_KEY, conform, structural_problems
from core.settings import get_settings
from features.expectations import UNIQUE_KEY_CHECK, build_suite, check_label, utc_timestamp
from features.gx_runner import run_suite

REASONS_COLUMN = "reasons"
REASON_SEPARATOR = "; "


@dataclass
class ValidationReport:
    """What the gate did with one batch; ``to_json()`` is the content of ``report.json``."""

    batch_id: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    failed_expectations: dict[str, int]
    accepted: bool
    reason: str | None
    bad_fraction: float
    max_bad_fraction: float
    validated_at: str
    expectations_evaluated: int = 0
    seconds: float = 0.0
    rows_per_s: float = 0.0
    input: str | None = None
    data_docs: str | None = None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """The report as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


class BatchRejected(Exception):  # noqa: N818 - the name states the outcome, not an error
    """The batch failed as a whole; ``str(exc)`` says why and ``report`` holds what was computed.

    ``quarantine`` holds every row of the batch (as it came) with its ``reasons``, or ``None``
    when the input could not be read into rows at all.
    """

    def __init__(
        self, message: str, report: ValidationReport, quarantine: pd.DataFrame | None = None
    ) -> None:
        super().__init__(message)
        self.report = report
        self.quarantine = quarantine


def validate_frame(
    frame: pd.DataFrame,
    now: datetime | None = None,
    max_bad_fraction: float | None = None,
    *,
    batch_id: str | None = None,
    data_docs_dir: Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, ValidationReport]:
    """Split ``frame`` into (valid rows, quarantined rows, report), or raise BatchRejected.

    Valid rows are conformed to the telemetry schema; quarantined rows keep their original
    values plus ``reasons``. ``now`` (default: current UTC time) is the reference for "not in
    the future"; ``max_bad_fraction`` defaults to ``settings.validation.max_bad_fraction``.

    Duplicate keys: GX's compound-uniqueness expectation flags every copy of a repeated
    (user_id, event_timestamp). The gate keeps the first copy that passes all other
    expectations and quarantines the other copies as duplicates; a key none of whose copies is
    otherwise clean has all copies quarantined with the duplicate reason added.
    """
    started = time.perf_counter()
    now_utc = utc_timestamp(now)
    frame = frame.reset_index(drop=True)
    report = _new_report(batch_id or frame_hash(frame), len(frame), max_bad_fraction, now_utc)
    problems = ["empty batch: the input has no rows"] if frame.empty else structural_problems(frame)
    if problems:
        _reject(report, problems, frame, {}, started)

    with pd.option_context("mode.string_storage", "pyarrow"):
        typed = conform(frame)  # Arrow-backed strings: GX copies the frame for most checks
    suite = build_suite(now_utc)
    run_name = f"batch-{report.batch_id[:16]}"
    run = run_suite(typed, suite, data_docs_dir, run_name, now_utc.to_pydatetime())
    report.data_docs = str(run.data_docs) if run.data_docs else None
    report.expectations_evaluated = len(run.result.results)
    masks, batch_failures = _failures(
        run.result, len(typed), [check_label(e) for e in suite.expectations]
    )
    masks = _keep_first_copy(masks, typed)
    report.failed_expectations = {label: int(mask.sum()) for label, mask in masks.items()}
    report.failed_expectations |= {label: len(typed) for label in batch_failures}
    bad = np.logical_or.reduce(list(masks.values())) if masks else np.zeros(len(typed), bool)
    report.bad_fraction = float(bad.mean())
    if batch_failures:
        _reject(report, [f"failed: {label}" for label in batch_failures], frame, masks, started)
    if report.bad_fraction > report.max_bad_fraction:
        problem = (
            f"bad fraction {report.bad_fraction:.4f} is above the threshold "
            f"{report.max_bad_fraction:.4f}"
        )
        _reject(report, [problem], frame, masks, started)

    valid = typed.loc[~bad].reset_index(drop=True)
    quarantine = _with_reasons(frame.loc[bad], _reasons(masks, np.flatnonzero(bad)))
    report.rows_valid, report.rows_quarantined = len(valid), len(quarantine)
    report.accepted = True
    _finish_timing(report, started)
    return valid, quarantine, report


def validate_batch(
    input: Path,
    out: Path,
    max_bad_fraction: float | None = None,
    now: datetime | None = None,
) -> ValidationReport:
    """Validate the Parquet file or dataset folder ``input``; write the gate's outputs to ``out``.

    Writes ``out/valid/`` (telemetry dataset), ``out/quarantine/`` (rejected rows with
    ``reasons``), ``out/report.json`` and ``out/data_docs/index.html``, replacing any previous
    run's outputs, so re-running on the same input gives the same files. On a whole-batch
    failure, writes the report (``accepted: false``) and the quarantine, leaves ``out/valid/``
    empty and raises :class:`BatchRejected`.
    """
    started = time.perf_counter()
    input, out = Path(input), Path(out)
    valid_dir, quarantine_dir = out / "valid", out / "quarantine"
    _clear_outputs(out)
    try:
        frame, batch_id = _read_input(input, now, max_bad_fraction)
        valid, quarantine, report = validate_frame(
            frame, now, max_bad_fraction, batch_id=batch_id, data_docs_dir=out / "data_docs"
        )
    except BatchRejected as rejected:
        rejected.report.input = str(input)
        if rejected.quarantine is not None:
            _write_frame(rejected.quarantine, quarantine_dir)
        _finish_timing(rejected.report, started)
        _write_report(rejected.report, out)
        raise
    write_telemetry_part(valid, valid_dir, 0)
    _write_frame(quarantine, quarantine_dir)
    report.input = str(input)
    _finish_timing(report, started)
    _write_report(report, out)
    return report


def frame_hash(frame: pd.DataFrame) -> str:
    """A content hash of ``frame`` (values and column names), used as the batch id."""
    digest = hashlib.sha256(json.dumps(list(map(str, frame.columns))).encode())
    try:
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    except TypeError:  # unhashable cells (lists, dicts): fall back to the pickled frame
        digest.update(pickle.dumps(frame))
    return digest.hexdigest()


def file_hash(path: Path) -> str:
    """A content hash of a file, or of a folder's files (relative names and bytes)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_input(
    path: Path, now: datetime | None, max_bad_fraction: float | None
) -> tuple[pd.DataFrame, str]:
    """Read the batch and its content hash; an unreadable input rejects the batch."""
    problem = None
    if not path.exists():
        problem = f"input not found: {path}"
    elif path.is_file() and path.stat().st_size == 0:
        problem = f"empty file: {path} has no bytes"
    else:
        try:
            return _read_parquet(path), file_hash(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            problem = f"unreadable Parquet: {path}: {exc}"
    report = _new_report(file_hash(path) if path.exists() else "", 0, max_bad_fraction, now)
    report.reason, report.problems = "batch rejected: " + problem, [problem]
    raise BatchRejected(report.reason, report)


def _read_parquet(path: Path) -> pd.DataFrame:
    """Read a Parquet file or dataset folder, text columns as Arrow-backed pandas strings.

    The values are exactly as stored; Arrow-backed strings spare building a Python object per
    cell, and keep GX's many copies of the frame cheap.
    """
    text = pd.StringDtype("pyarrow")
    return pq.read_table(path).to_pandas(
        types_mapper={pa.string(): text, pa.large_string(): text}.get
    )


def _new_report(
    batch_id: str, rows_in: int, max_bad_fraction: float | None, now: datetime | None
) -> ValidationReport:
    """The report of a batch not yet validated: nothing valid, every row counted as quarantined."""
    limit = get_settings().validation.max_bad_fraction
    return ValidationReport(
        batch_id=batch_id,
        rows_in=rows_in,
        rows_valid=0,
        rows_quarantined=rows_in,
        failed_expectations={},
        accepted=False,
        reason=None,
        bad_fraction=0.0,
        max_bad_fraction=limit if max_bad_fraction is None else max_bad_fraction,
        validated_at=utc_timestamp(now).isoformat(),
    )


def _failures(
    result: ExpectationSuiteValidationResult, n_rows: int, suite_order: list[str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Row masks of the failed row-level expectations, and labels of failed batch-level ones,
    both in the order of ``suite_order`` (the suite's labels).

    An expectation that GX could not evaluate counts as a batch-level failure: the gate cannot
    vouch for any row it did not check.
    """
    masks: dict[str, np.ndarray] = {}
    batch_failures: list[str] = []
    outcomes = sorted(
        result.results,
        key=lambda outcome: suite_order.index(check_label(outcome.expectation_config)),
    )
    for outcome in outcomes:
        label = check_label(outcome.expectation_config)
        error = _raised(outcome.exception_info)
        if error is not None:
            batch_failures.append(f"{label} (could not be evaluated: {error})")
        elif not outcome.success:
            rows = outcome.result.get("unexpected_index_list")
            if rows is None:
                observed = outcome.result.get("observed_value")
                batch_failures.append(f"{label} (observed {observed!r})")
            else:
                mask = np.zeros(n_rows, dtype=bool)
                mask[np.asarray(rows, dtype=np.int64)] = True
                masks[label] = mask
    return masks, batch_failures


def _raised(exception_info: dict | None) -> str | None:
    """The message of an exception GX caught while evaluating an expectation, if any."""
    if not exception_info:
        return None
    infos = [exception_info] if "raised_exception" in exception_info else exception_info.values()
    for info in infos:
        if isinstance(info, dict) and info.get("raised_exception"):
            return str(info.get("exception_message"))
    return None


def _keep_first_copy(masks: dict[str, np.ndarray], typed: pd.DataFrame) -> dict[str, np.ndarray]:
    """Narrow the duplicate-key mask so the first otherwise-clean copy of each key stays valid."""
    flagged = masks.get(UNIQUE_KEY_CHECK)
    if flagged is None:
        return masks
    others = [mask for label, mask in masks.items() if label != UNIQUE_KEY_CHECK]
    clean = ~np.logical_or.reduce(others) if others else np.ones(len(typed), dtype=bool)
    candidates = flagged & clean
    keepers = np.zeros(len(typed), dtype=bool)
    first = ~typed.loc[candidates, list(ENTITY_KEY)].duplicated(keep="first")
    keepers[first.index[first.to_numpy()]] = True
    narrowed = {**masks, UNIQUE_KEY_CHECK: flagged & ~keepers}
    if not narrowed[UNIQUE_KEY_CHECK].any():
        del narrowed[UNIQUE_KEY_CHECK]
    return narrowed


def _reasons(masks: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """For each of ``rows``, the "; "-joined labels of the expectations it failed."""
    reasons = np.full(len(rows), "", dtype=object)
    for label, mask in masks.items():
        hit = mask[rows]
        reasons[hit] = np.where(reasons[hit] == "", label, reasons[hit] + REASON_SEPARATOR + label)
    return reasons


def _with_reasons(rows: pd.DataFrame, reasons: np.ndarray) -> pd.DataFrame:
    """``rows`` as they came, plus the ``reasons`` column (an input column of that name is kept
    as ``reasons_in_input``)."""
    rows = rows.rename(columns={REASONS_COLUMN: f"{REASONS_COLUMN}_in_input"})
    return rows.assign(**{REASONS_COLUMN: reasons}).reset_index(drop=True)


def _reject(
    report: ValidationReport,
    problems: list[str],
    frame: pd.DataFrame,
    masks: dict[str, np.ndarray],
    started: float,
) -> NoReturn:
    """Fill in the report of a rejected batch and raise BatchRejected with every row quarantined."""
    message = "batch rejected: " + REASON_SEPARATOR.join(problems)
    report.accepted, report.reason, report.problems = False, message, problems
    report.rows_valid, report.rows_quarantined = 0, len(frame)
    _finish_timing(report, started)
    row_reasons = _reasons(masks, np.arange(len(frame)))
    batch_reason = message.replace(";", ",")
    reasons = np.where(
        row_reasons == "", batch_reason, row_reasons + REASON_SEPARATOR + batch_reason
    )
    raise BatchRejected(message, report, _with_reasons(frame, reasons))


def _finish_timing(report: ValidationReport, started: float) -> None:
    report.seconds = time.perf_counter() - started
    report.rows_per_s = report.rows_in / report.seconds if report.seconds > 0 else 0.0


def _clear_outputs(out: Path) -> None:
    """Remove what a previous run wrote to ``out``, so that a re-run leaves nothing stale."""
    for folder in (out / "valid", out / "quarantine"):
        folder.mkdir(parents=True, exist_ok=True)
        clear_dataset(folder)
    shutil.rmtree(out / "data_docs", ignore_errors=True)
    (out / "report.json").unlink(missing_ok=True)


def _write_frame(frame: pd.DataFrame, out_dir: Path) -> Path:
    """Write ``frame`` unchanged as the single part of ``out_dir`` (atomically).

    Text is stored as Arrow ``string``, as the input was read.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = [f.with_type(pa.string()) if f.type == pa.large_string() else f for f in table.schema]
    table = table.cast(pa.schema(fields, metadata=table.schema.metadata))
    target = part_path(out_dir, 0)
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, target)
    return target


def _write_report(report: ValidationReport, out: Path) -> Path:
    """Write ``report.json`` atomically."""
    target = out / "report.json"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, target)
    return target
