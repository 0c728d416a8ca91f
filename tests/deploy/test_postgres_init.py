"""deploy/postgres/init-databases.sh, run for real against the local PostgreSQL (127.0.0.1:5432).

The script is what the postgres container runs on its first start; here it runs under a unique
name prefix (DB_NAME_PREFIX) so it never touches another test's databases, and everything it
created is dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.deploy.compose_files import (
    ENV_EXAMPLE,
    REPO_ROOT,
    interpolate_tree,
    load_compose,
    read_env_file,
    resolved_environment,
)

SCRIPT = REPO_ROOT / "deploy" / "postgres" / "init-databases.sh"
PG = {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "postgres"}


def _psql(sql: str, *, user: str = "postgres", database: str = "postgres") -> str:
    command = ["psql", "--no-psqlrc", "-tAX", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", database]
    done = subprocess.run(
        [*command, "-c", sql],
        capture_output=True,
        text=True,
        env={**os.environ, **PG},
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return done.stdout.strip()


def _databases_the_stack_uses() -> set[str]:
    """Every database named in a PostgreSQL URL of the compose file (with .env.example)."""
    env = read_env_file(ENV_EXAMPLE)
    compose = interpolate_tree(load_compose(), env)
    names = set()
    for service in compose["services"].values():
        for value in resolved_environment(service, env).values():
            url = urlsplit(value)
            if "postgres" in url.scheme:
                names.add(url.path.lstrip("/"))
    return names


@pytest.fixture
def prefix() -> Iterator[str]:
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    try:
        _psql("SELECT 1")
    except RuntimeError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield prefix
    for name in _psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%'").split():
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for name in _psql(f"SELECT rolname FROM pg_roles WHERE rolname LIKE '{prefix}%'").split():
        _psql(f'DROP ROLE IF EXISTS "{name}"')


def _run_script(prefix: str, **passwords: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **PG,
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        "DB_NAME_PREFIX": prefix,
        **passwords,
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120, check=False
    )


PASSWORDS = {
    "AIRFLOW_DB_PASSWORD": "test-pw-airflow",
    "MLFLOW_DB_PASSWORD": "test-pw-mlflow",
    "FEAST_DB_PASSWORD": "test-pw-feast",
    "LEDGER_DB_PASSWORD": "test-pw-ledger",
}


def test_creates_one_private_database_per_part_idempotently(prefix: str) -> None:
    first = _run_script(prefix, **PASSWORDS)
    assert first.returncode == 0, first.stderr
    second = _run_script(prefix, **PASSWORDS)
    assert second.returncode == 0, second.stderr

    created = _psql(
        "SELECT datname || ':' || pg_get_userbyid(datdba) FROM pg_database "
        f"WHERE datname LIKE '{prefix}%' ORDER BY 1"
    ).split()
    names = {entry.split(":")[0].removeprefix(prefix) for entry in created}
    assert names >= _databases_the_stack_uses()
    assert all(entry.split(":")[0] == entry.split(":")[1] for entry in created)

    own = f"{prefix}airflow"
    assert _psql("SELECT current_user", user=own, database=own) == own
    with pytest.raises(RuntimeError, match="CONNECT"):
        _psql("SELECT 1", user=own, database=f"{prefix}mlflow")


def test_refuses_to_create_a_role_without_a_password(prefix: str) -> None:
    done = _run_script(prefix, **{**PASSWORDS, "LEDGER_DB_PASSWORD": ""})
    assert done.returncode != 0
    assert "prewarm_ledger" in done.stderr
    assert _psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{prefix}prewarm_ledger'") == "0"
