"""Push a routing config to the router, as the ``predict_and_provision`` DAG does.

``push_config`` retries what may be transient (connection errors, timeouts, 5xx answers) with
exponential backoff, and never what the router refused on purpose (4xx): those raise
``PushRejectedError`` with the router's reasons, and the config in force stays as it was.
Retrying is safe because the router accepts a re-push of the config already in force as a
no-op (``unchanged: true``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from core.settings import get_settings
from serving.router.models import ConfigPushed, RoutingConfig

log = logging.getLogger(__name__)


class PushRejectedError(Exception):
    """The router refused the config (401, 422, …); ``reasons`` says why."""

    def __init__(self, status: int, reasons: list[str]) -> None:
        super().__init__(f"router refused the config (HTTP {status}): " + "; ".join(reasons))
        self.status = status
        self.reasons = reasons


class RouterUnavailableError(Exception):
    """The router could not be reached, or kept failing, for every attempt."""


def push_config(
    config: RoutingConfig | Mapping[str, Any],
    url: str,
    token: str,
    *,
    attempts: int | None = None,
    backoff_s: float | None = None,
    timeout_s: float | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ConfigPushed:
    """POST ``config`` to ``url``/v1/config with ``token``; return the router's answer.

    Defaults for ``attempts``, ``backoff_s`` (doubling) and ``timeout_s`` come from
    ``settings.router``. Raises PushRejectedError on a 4xx answer (no retry) and
    RouterUnavailableError once every attempt met a connection error or a 5xx answer.
    """
    router = get_settings().router
    attempts = attempts or router.push_attempts
    wait = router.push_backoff_s if backoff_s is None else backoff_s
    body = _body(config)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    endpoint = url.rstrip("/") + "/v1/config"
    last_problem = "no attempt made"
    with httpx.Client(timeout=timeout_s or router.push_timeout_s, transport=transport) as client:
        for attempt in range(1, attempts + 1):
            try:
                response = client.post(endpoint, content=body, headers=headers)
            except httpx.TransportError as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return ConfigPushed.model_validate_json(response.content)
                reasons = _reasons(response)
                if response.status_code < 500:
                    raise PushRejectedError(response.status_code, reasons)
                last_problem = f"HTTP {response.status_code}: " + "; ".join(reasons)
            if attempt < attempts:
                log.warning("push attempt %d/%d failed (%s)", attempt, attempts, last_problem)
                sleep(wait)
                wait *= 2
    raise RouterUnavailableError(
        f"config push to {endpoint} failed {attempts} time(s); last: {last_problem}"
    )


def _body(config: RoutingConfig | Mapping[str, Any]) -> bytes:
    if isinstance(config, RoutingConfig):
        return config.model_dump_json().encode()
    return json.dumps(config, default=str).encode()


def _reasons(response: httpx.Response) -> list[str]:
    """The router's reasons: FastAPI's ``detail`` (a text or a list of {loc, msg, type})."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return [response.text[:500] or response.reason_phrase]
    if isinstance(detail, list):
        return [_describe(item) for item in detail]
    return [str(detail)]


def _describe(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    return f"{where or 'body'}: {item.get('msg')} ({item.get('type')})"
