"""The DAG's config push client against a real router on loopback."""

from __future__ import annotations

from contextlib import ExitStack

import httpx
import pytest

from core.settings import Settings
from serving.router.app import create_app
from serving.router.client import PushRejectedError, RouterUnavailableError, push_config
from tests.serving.router.conftest import (
    AUTH,
    TOKEN,
    allocation,
    config,
    config_json,
    free_port,
    live_server,
)


def test_push_returns_the_routers_answer(settings: Settings) -> None:
    with live_server(create_app(settings, token=TOKEN), free_port()) as url:
        pushed = push_config(config(1), url, TOKEN)
        assert (pushed.version, pushed.unchanged) == (1, False)
        again = push_config(config_json(1), url, TOKEN)  # a plain dict works too
        assert again.unchanged is True


def test_push_retries_until_the_router_is_up(settings: Settings) -> None:
    port = free_port()
    waits: list[float] = []
    with ExitStack() as later:

        def start_router_while_waiting(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 2:  # the router comes up after the second failed attempt
                later.enter_context(live_server(create_app(settings, token=TOKEN), port))

        pushed = push_config(
            config(1), f"http://127.0.0.1:{port}", TOKEN,
            attempts=5, backoff_s=0.1, sleep=start_router_while_waiting,
        )  # fmt: skip
    assert pushed.version == 1
    assert waits == [0.1, 0.2]  # two connection errors, exponential backoff


def test_a_refused_push_raises_with_the_reason_without_retrying(settings: Settings) -> None:
    waits: list[float] = []
    with live_server(create_app(settings, token=TOKEN), free_port()) as url:
        push_config(config(1), url, TOKEN)
        with pytest.raises(PushRejectedError) as refused:
            push_config(config(2), url, "wrong-token", sleep=waits.append)
        assert refused.value.status == 401
        with pytest.raises(PushRejectedError) as invalid:
            bad = config_json(2, allocation("u1", region="nowhere-1"))
            push_config(bad, url, TOKEN, sleep=waits.append)
        assert invalid.value.status == 422
        assert any("unknown region 'nowhere-1'" in r for r in invalid.value.reasons)
        assert httpx.get(f"{url}/v1/config", headers=AUTH).json()["version"] == 1
    assert waits == []


def test_server_errors_are_retried_then_reported(settings: Settings) -> None:
    waits: list[float] = []
    # Without a token the admin API answers 503: a server-side refusal worth retrying.
    with (
        live_server(create_app(settings), free_port()) as url,
        pytest.raises(RouterUnavailableError, match="admin API disabled"),
    ):
        push_config(config(1), url, TOKEN, attempts=3, backoff_s=0.0, sleep=waits.append)
    assert len(waits) == 2
