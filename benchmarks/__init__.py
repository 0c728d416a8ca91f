"""Benchmarks of prewarm: each measures a figure beside a reference measured in the same run.

`prewarm bench [--only a,b] --out FILE.json` runs them; each returns one JSON-able dict under its
own key (DESIGN.md section 4). Timed assertions do not belong in the test suite: figures live here.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from rich.console import Console

# name -> "module:function"; modules are imported only when their benchmark runs.
BENCHMARKS: dict[str, str] = {
    "simulate": "benchmarks.simulate:run",
    "features": "benchmarks.features:run",
    "training": "benchmarks.training:run",
    "placement": "benchmarks.placement:run",
    "batch_predict": "benchmarks.batch_predict:run",
    "router": "benchmarks.router:run",
    "celery": "benchmarks.celery_scaleout:run",
}


def run_benchmarks(
    names: list[str] | None = None, console: Console | None = None
) -> dict[str, Any]:
    """Run the named benchmarks (all when ``names`` is None) and return their figures by name."""
    selected = names or list(BENCHMARKS)
    unknown = [n for n in selected if n not in BENCHMARKS]
    if unknown:
        raise KeyError(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}")
    results: dict[str, Any] = {}
    for name in selected:
        if console is not None:
            console.print(f"[bold]benchmark[/] {name} …")
        results[name] = _load(BENCHMARKS[name])()
    return results


def _load(target: str) -> Callable[[], dict[str, Any]]:
    module, function = target.split(":")
    return getattr(import_module(module), function)
