"""The router child process the demo and `prewarm up` start: token, connection, clean stop."""

from __future__ import annotations

import json

import httpx
import pytest

from prewarm.router_process import ROUTER_CONNECTION_ENV, running_router


def test_the_router_runs_with_a_generated_token_and_stops_afterwards() -> None:
    with running_router() as router:
        assert httpx.get(router.url + "/healthz").json()["status"] == "ok"
        connection = json.loads(router.connection_env()[ROUTER_CONNECTION_ENV])
        assert (connection["host"], connection["port"]) == (router.host, router.port)
        assert connection["password"] == router.token and len(router.token) >= 32
        # The admin API takes that token and refuses any other.
        body = {"version": 1, "users": []}
        refused = httpx.post(router.url + "/v1/config", json=body,
                             headers={"Authorization": "Bearer wrong"})  # fmt: skip
        assert refused.status_code == 401
        accepted = httpx.post(router.url + "/v1/config", json=body,
                              headers={"Authorization": f"Bearer {router.token}"})  # fmt: skip
        assert accepted.status_code == 200, accepted.text
        process = router.process
    assert process.poll() is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(router.url + "/healthz", timeout=2.0)
