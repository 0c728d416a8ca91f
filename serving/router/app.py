"""The router's HTTP API (FastAPI), started by ``prewarm router serve``.

Endpoints: ``POST /v1/config`` (push a routing config), ``GET /v1/config``,
``POST /v1/config/rollback`` (admin: bearer token); ``POST /v1/probes`` (a batch of probes →
one decision per user); ``GET /v1/routes/{user_id}``; ``GET /healthz``; ``GET /metrics``
(Prometheus); the OpenAPI document at ``/openapi.json``.

Admin authentication: the token is read from the environment variable named by
``settings.router.token_env`` (``PREWARM_ROUTER_TOKEN``) and compared in constant time.

- token set: a missing or wrong ``Authorization: Bearer …`` header → **401**;
- no token, ``settings.router.production`` false: the admin API is disabled → **503** on every
  admin endpoint (probes and routes keep working);
- no token, production: the router refuses to start (``RouterStartupError``).

Rejections: a body that does not match the schema, or that is inconsistent (unknown region,
stale version, duplicate users, implausible probe), is answered **422** with every reason in
FastAPI's ``{"detail": [{loc, msg, type}]}`` shape, counted in the metrics by reason and kept
(truncated) in the router's state; nothing of a rejected request is applied.

Migrations: with ``run_migrations`` (``prewarm router serve`` passes
``settings.router.run_migrations``) the lifespan runs ``serving.router.migration_loop`` in a
background thread, started after the state is checked and stopped on shutdown.

Probe batches are handled on the event loop, one at a time, so two batches for the same user
never interleave their read-modify-write of that user's route (one worker per state).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.settings import Settings, get_settings
from serving.router.metrics import RouterMetrics
from serving.router.migration_journal import MigrationJournal
from serving.router.migration_loop import MigrationLoop
from serving.router.models import (
    USER_ID_PATTERN,
    ConfigPushed,
    ConfigRolledBack,
    ConfigSummary,
    Health,
    ProbeBatch,
    ProbeResult,
    Problem,
    Rejection,
    RouteView,
    RoutingConfig,
)
from serving.router.service import (
    ConfigRejectedError,
    ProbesRejectedError,
    RequestRejectedError,
    RouterService,
)
from serving.router.store import NoPreviousConfigError, RouterStore, open_store

log = logging.getLogger(__name__)

CONFIG_PATH = "/v1/config"
ROLLBACK_PATH = "/v1/config/rollback"
PROBES_PATH = "/v1/probes"
STATE_ERRORS = (sqlite3.OperationalError, redis.ConnectionError, redis.TimeoutError)

ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong bearer token."},
    503: {"model": Problem, "description": "Admin API disabled (no token set) or state down."},
}
STATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "Router state unreachable."},
}


class RouterStartupError(RuntimeError):
    """The router cannot start with this configuration."""


def create_app(
    settings: Settings | None = None,
    *,
    store: RouterStore | None = None,
    token: str | None = None,
    clock: Callable[[], datetime] | None = None,
    run_migrations: bool = False,
    migration_faults: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the router's app on ``store`` (default: the one settings name).

    ``token`` defaults to the environment variable ``settings.router.token_env``. Raises
    RouterStartupError in production mode when there is no token. ``run_migrations``: run the
    migration executor while the app is up (``migration_faults``: its fault points).
    """
    settings = settings or get_settings()
    token = token if token is not None else os.environ.get(settings.router.token_env) or None
    if settings.router.production and not token:
        raise RouterStartupError(
            f"production router needs an admin token: set {settings.router.token_env}"
        )
    store = store if store is not None else open_store(settings)
    journal = MigrationJournal.from_settings(settings)
    service = RouterService(store, settings, clock or (lambda: datetime.now(UTC)), journal)
    metrics = RouterMetrics()
    migrations = MigrationLoop(settings, store, faults=migration_faults) if run_migrations else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            metrics.config_version.set(service.active().version or 0)
        except STATE_ERRORS:  # start anyway: /healthz answers 503 until the state is back
            log.exception("router state unreachable at startup")
        if migrations is not None:
            migrations.start()
        try:
            yield
        finally:
            if migrations is not None:
                migrations.stop()
            journal.dispose()

    app = FastAPI(
        title="prewarm router",
        version="1",
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.service = service
    app.state.metrics = metrics
    admin = _admin_guard(token, settings.router.token_env, metrics)
    keep = _RejectionKeeper(store, settings.router.rejected_body_bytes, service.clock)

    @app.exception_handler(RequestValidationError)
    async def schema_rejected(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if request.url.path == PROBES_PATH:
            metrics.count_rejected_probes(_probe_reasons(errors, exc.body))
            await keep(request, errors)
        elif request.url.path == CONFIG_PATH:
            metrics.config_pushes.labels("rejected", _first_type(errors)).inc()
            await keep(request, errors)
        return JSONResponse({"detail": jsonable_encoder(_without_bulky_input(errors))}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_refused(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers 400 to a body it cannot even decode; for the two endpoints that take
        # a body that is garbage like any other, refused, counted and kept as such (422).
        if exc.status_code == 400 and request.url.path in (PROBES_PATH, CONFIG_PATH):
            error = {"type": "json_invalid", "loc": ["body"], "msg": "body is not UTF-8 JSON"}
            return await schema_rejected(request, RequestValidationError([error]))
        return await http_exception_handler(request, exc)

    async def state_down(_: Request, exc: Exception) -> Response:
        log.exception("router state unreachable")
        return JSONResponse({"detail": f"router state unreachable: {exc}"}, status_code=503)

    for error in STATE_ERRORS:
        app.add_exception_handler(error, state_down)

    @app.post(
        CONFIG_PATH,
        response_model=ConfigPushed,
        responses=ADMIN_RESPONSES,
        dependencies=[Depends(admin)],
        tags=["admin"],
        summary="Push a versioned routing config (admin)",
    )
    def push_config(config: RoutingConfig, request: Request) -> Any:
        """Validate, swap in atomically and persist; the replaced config is kept for rollback."""
        try:
            result = service.push_config(config)
        except ConfigRejectedError as exc:
            metrics.config_pushes.labels("rejected", _first_type(exc.errors)).inc()
            keep.sync(request, exc.errors, config)
            return _rejected(exc)
        metrics.config_pushes.labels("unchanged" if result.unchanged else "accepted", "ok").inc()
        metrics.config_version.set(result.version)
        return result

    @app.get(
        CONFIG_PATH,
        response_model=ConfigSummary,
        responses={**ADMIN_RESPONSES, 404: {"model": Problem, "description": "No config yet."}},
        dependencies=[Depends(admin)],
        tags=["admin"],
        summary="The config in force (admin)",
    )
    def get_config() -> Any:
        """Version, push time, user count and thresholds of the config in force."""
        summary = service.config_summary()
        if summary is None:
            return JSONResponse({"detail": "no config pushed yet"}, status_code=404)
        return summary

    @app.post(
        ROLLBACK_PATH,
        response_model=ConfigRolledBack,
        responses={**ADMIN_RESPONSES, 409: {"model": Problem, "description": "Nothing to undo."}},
        dependencies=[Depends(admin)],
        tags=["admin"],
        summary="Put the previous config back in force (admin)",
    )
    def rollback() -> Any:
        """Undo the last push (once: the rolled-back config is not kept)."""
        try:
            result = service.rollback()
        except NoPreviousConfigError as exc:
            metrics.rollbacks.labels("rejected").inc()
            return JSONResponse({"detail": str(exc)}, status_code=409)
        metrics.rollbacks.labels("accepted").inc()
        metrics.config_version.set(result.version)
        return result

    @app.post(
        PROBES_PATH,
        response_model=ProbeResult,
        responses=STATE_RESPONSES,
        tags=["routing"],
        summary="Report probes; get one routing decision per user",
    )
    async def post_probes(batch: ProbeBatch, request: Request) -> Any:
        """Fold the probes into each user's smoothed latency and apply the switchover rule."""
        try:
            result = service.handle_probes(batch.probes)
        except ProbesRejectedError as exc:
            metrics.count_rejected_probes(_probe_reasons(exc.errors, None, len(batch.probes)))
            await keep(request, exc.errors)
            return _rejected(exc)
        metrics.count_result(result)
        metrics.config_version.set(result.config_version or 0)
        return Response(result.to_json(), media_type="application/json")

    @app.get(
        "/v1/routes/{user_id}",
        response_model=RouteView,
        responses={**STATE_RESPONSES, 404: {"model": Problem, "description": "Unknown user."}},
        tags=["routing"],
        summary="Where a user connects now",
    )
    async def get_route(
        user_id: Annotated[str, Path(pattern=USER_ID_PATTERN)],
    ) -> Any:
        """Region, reason, config version and any pending switchover of one user."""
        view = service.route(user_id)
        if view is None:
            return JSONResponse({"detail": f"unknown user {user_id!r}"}, status_code=404)
        return view

    @app.get("/healthz", response_model=Health, responses=STATE_RESPONSES, tags=["ops"])
    async def healthz() -> Any:
        """Alive, and the state reachable."""
        store.ping()
        return Health(status="ok", state=store.kind, config_version=service.active().version)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text."}},
        tags=["ops"],
    )
    async def prometheus() -> Response:
        """Prometheus metrics of this router process."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the router with uvicorn (one worker), and its migration executor, until interrupted."""
    import uvicorn

    app = create_app(settings, run_migrations=settings.router.run_migrations)
    try:
        uvicorn.run(app, host=host, port=port, workers=1, access_log=settings.router.access_log)
    finally:
        app.state.store.close()


def _admin_guard(token: str | None, token_env: str, metrics: RouterMetrics) -> Callable[..., None]:
    """The dependency every admin endpoint runs before anything else."""
    scheme = HTTPBearer(auto_error=False, description=f"The token in {token_env}.")
    expected = token.encode() if token else None

    def admin(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(scheme),
    ) -> None:
        if expected is None:
            _count_refusal(metrics, request, "admin_disabled")
            raise _http(503, f"admin API disabled: set {token_env} and restart the router")
        given = credentials.credentials.encode() if credentials else b""
        if not secrets.compare_digest(given, expected):
            _count_refusal(metrics, request, "unauthorized")
            raise _http(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    return admin


class _RejectionKeeper:
    """Keeps refused requests (reason and truncated body) in the router's state."""

    def __init__(self, store: RouterStore, body_bytes: int, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.body_bytes = body_bytes
        self.clock = clock

    async def __call__(self, request: Request, errors: list) -> None:
        self._keep(request.url.path, errors, await request.body())

    def sync(self, request: Request, errors: list, config: RoutingConfig) -> None:
        self._keep(request.url.path, errors, config.model_dump_json().encode())

    def _keep(self, endpoint: str, errors: list, body: bytes) -> None:
        detail = json.dumps(errors, default=str)
        rejection = Rejection(
            at=self.clock(),
            endpoint=endpoint,
            reason=",".join(sorted({str(e.get("type")) for e in errors}))[:200],
            detail=detail[: self.body_bytes],
            body=body[: self.body_bytes].decode("utf-8", "replace"),
            truncated=len(body) > self.body_bytes or len(detail) > self.body_bytes,
        )
        try:
            self.store.record_rejection(rejection)
        except STATE_ERRORS:
            log.exception("could not keep a rejected request: %s", rejection.reason)


def _rejected(exc: RequestRejectedError) -> Response:
    return JSONResponse({"detail": exc.errors}, status_code=422)


def _probe_reasons(errors: list, body: Any, total: int | None = None) -> list[str]:
    """One reason per rejected probe: its first error, or the batch's own error.

    Probes without an error of their own count with the batch's error (say, ``batch_too_large``)
    or, when the batch has none, as ``in_rejected_batch``.
    """
    per_probe: dict[int, str] = {}
    batch_level: list[str] = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if len(loc) >= 3 and loc[1] == "probes" and isinstance(loc[2], int):
            per_probe.setdefault(loc[2], str(error.get("type")))
        else:
            batch_level.append(str(error.get("type")))
    if total is None and isinstance(body, dict) and isinstance(body.get("probes"), list):
        total = len(body["probes"])
    reasons = list(per_probe.values())
    filler = batch_level[0] if batch_level else "in_rejected_batch"
    if total is not None:
        reasons += [filler] * max(total - len(per_probe), 0)
    return reasons or batch_level[:1] or ["malformed"]


def _without_bulky_input(errors: Sequence[Any]) -> list[Any]:
    """Validation errors fit to send back: whole objects or lists (a config can be megabytes)
    are not echoed, and a non-finite number is echoed as text (JSON has no NaN)."""
    answer = []
    for error in errors:
        error = dict(error)
        value = error.get("input")
        if isinstance(value, dict | list):
            del error["input"]
        elif isinstance(value, float) and not math.isfinite(value):
            error["input"] = str(value)
        answer.append(error)
    return answer


def _first_type(errors: list) -> str:
    return str(errors[0].get("type", "invalid")) if errors else "invalid"


def _count_refusal(metrics: RouterMetrics, request: Request, reason: str) -> None:
    if request.url.path == CONFIG_PATH and request.method == "POST":
        metrics.config_pushes.labels("rejected", reason).inc()
    elif request.url.path == ROLLBACK_PATH:
        metrics.rollbacks.labels("rejected").inc()


def _http(status: int, detail: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=detail, headers=headers)
