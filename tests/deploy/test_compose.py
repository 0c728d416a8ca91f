"""The production stack as files: docker-compose.yml, .env.example, Dockerfile, checked statically.

No Docker engine runs here, so these tests check what can go wrong before one does: the file
against the Compose Specification schema, every variable it interpolates documented in
.env.example (with placeholders only), every PREWARM_* variable a real settings field that
takes effect, every program a service runs (prewarm, airflow, mlflow, feast, python) accepting
the exact arguments given, pinned images, healthchecks, start order and named volumes.

The schema, tests/deploy/compose-spec.json, is the Compose Specification's JSON schema
(https://github.com/compose-spec/compose-spec, Apache License 2.0, see LICENSE.compose-spec
beside it) as vendored by the PyPI package check-jsonschema 0.39.0
(check_jsonschema/builtin_schemas/vendor/compose-spec.json, sha256 d549057e...0e64). It was
copied once; tests never fetch anything.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import itertools
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from core.settings import Settings
from tests.deploy.compose_files import (
    DOCKERFILE,
    DOCKERIGNORE,
    ENV_EXAMPLE,
    REPO_ROOT,
    SCHEMA_FILE,
    InterpolationError,
    Invocation,
    commented_examples,
    documented_names,
    environment,
    interpolate_tree,
    invocations,
    load_compose,
    read_env_file,
    referenced_variables,
    resolved_environment,
    strings,
)

SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
# The image's checkout: the Dockerfile's WORKDIR, where compose commands find deploy/ scripts.
IMAGE_CHECKOUT = "/opt/prewarm"
PLACEHOLDERS = {"change-me", "testing"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|ACCESS_KEY|AUTH", re.IGNORECASE)
# Variables that say where a secret is kept, or who logs in, not the secret itself.
NOT_A_SECRET = re.compile(r"(?:FILE|PATH|USERS)$")
AIRFLOW_COMPONENTS = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
# Environment variables with the PREWARM_ prefix that are deliberately not settings fields.
NOT_SETTINGS = {
    "PREWARM_ROUTER_TOKEN": "the router's admin token is read from the environment only, so it "
    "never sits in a settings object that gets logged (DESIGN.md section 4)",
}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """The compose file before interpolation."""
    return load_compose()


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """The compose file as Compose runs it with .env.example as its .env."""
    return interpolate_tree(raw, env_example)


def _is_secret(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) and not NOT_A_SECRET.search(name)


def _services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _one_shot(service: Mapping[str, Any]) -> bool:
    return service.get("restart") == "no"


def _settings_field(name: str) -> FieldInfo | None:
    """The settings field an environment variable sets, walking nested sections on ``__``."""
    model: type[BaseModel] = Settings
    parts = name.removeprefix("PREWARM_").lower().split("__")
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return None
        if depth == len(parts) - 1:
            return field
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return None


def _settings_value(settings: Settings, name: str) -> Any:
    value: Any = settings
    for part in name.removeprefix("PREWARM_").lower().split("__"):
        value = getattr(value, part)
    return value


# --- the file itself ----------------------------------------------------------------------


def test_the_vendored_schema_is_the_recorded_one() -> None:
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    validator = Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(compose)
    ]
    assert errors == []


def test_the_schema_check_catches_a_broken_file(compose: dict[str, Any]) -> None:
    validator = Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["healthcheck"]["retries"] = "many"
    broken["services"]["router"]["depends_on"]["redis"]["condition"] = "service_ready"
    assert len(list(validator.iter_errors(broken))) == 2


# --- variables ----------------------------------------------------------------------------


def test_every_interpolated_variable_is_in_env_example(raw: dict[str, Any]) -> None:
    used = set().union(*(referenced_variables(text) for text in strings(raw)))
    assert used, "the compose file interpolates nothing"
    assert used - documented_names(ENV_EXAMPLE) == set()


def test_every_passed_through_variable_is_in_env_example(raw: dict[str, Any]) -> None:
    passed = {
        name
        for service in _services(raw).values()
        for name, value in environment(service).items()
        if value is None
    }
    assert passed - documented_names(ENV_EXAMPLE) == set()


def test_env_example_lists_nothing_the_stack_does_not_read(raw: dict[str, Any]) -> None:
    used = set().union(*(referenced_variables(text) for text in strings(raw)))
    passed = {n for s in _services(raw).values() for n, v in environment(s).items() if v is None}
    compose_own = {n for n in documented_names(ENV_EXAMPLE) if n.startswith("COMPOSE_")}
    assert documented_names(ENV_EXAMPLE) - used - passed - compose_own == set()


def test_env_example_holds_placeholders_only(env_example: dict[str, str]) -> None:
    secrets = {name: value for name, value in env_example.items() if _is_secret(name)}
    assert secrets, "no secret variable found: the name pattern is wrong"
    assert {name for name, value in secrets.items() if value not in PLACEHOLDERS} == set()


def test_secrets_have_no_default_and_stop_compose_when_missing(
    raw: dict[str, Any], env_example: dict[str, str]
) -> None:
    secret_refs = [
        match
        for text in strings(raw)
        for match in re.finditer(r"\$\{(?P<name>[A-Za-z_]\w*)(?P<op>[^}]*)\}", text)
        if _is_secret(match["name"])
    ]
    assert secret_refs
    assert {m.group(0) for m in secret_refs if not m["op"].startswith(":?")} == set()
    for name in {m["name"] for m in secret_refs}:
        without = {k: v for k, v in env_example.items() if k != name}
        with pytest.raises(InterpolationError, match=name):
            interpolate_tree(raw, without)


def test_no_secret_is_written_into_the_compose_file(raw: dict[str, Any]) -> None:
    literal = {
        f"{service_name}: {name}"
        for service_name, service in _services(raw).items()
        for name, value in environment(service).items()
        if _is_secret(name) and value is not None and "${" not in value
    }
    urls_with_literal_password = [
        text
        for text in strings(raw)
        for match in re.finditer(r"://[^/\s:@]*:(?P<password>[^@\s]*)@", text)
        if "${" not in match["password"]
    ]
    assert literal == set()
    assert urls_with_literal_password == []


# --- images -------------------------------------------------------------------------------


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        image = service["image"]
        repository, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
        assert repository and tag and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} is not pinned"


def test_no_service_uses_the_removed_minio_image(compose: dict[str, Any]) -> None:
    images = {service["image"].split(":")[0] for service in _services(compose).values()}
    assert "minio/minio" not in images


def test_project_image_tag_is_the_project_version(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert env_example["PREWARM_IMAGE_TAG"] == version
    built = {s["image"] for s in _services(compose).values() if "build" in s}
    assert built == {f"prewarm:{version}"}


def test_moto_image_matches_the_pinned_moto(compose: dict[str, Any]) -> None:
    pins = dict(
        line.split("==", 1)
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line
    )
    assert _services(compose)["moto"]["image"] == f"motoserver/moto:{pins['moto']}"


# --- health, order, volumes ---------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        if _one_shot(service):
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_dependencies_wait_for_health_or_completion(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, Mapping), f"{name}: depends_on without conditions"
        for target, rule in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            expected = (
                "service_completed_successfully"
                if _one_shot(services[target])
                else "service_healthy"
            )
            assert rule["condition"] == expected, f"{name} -> {target}"


def test_one_shot_steps_do_what_the_issue_asks(compose: dict[str, Any]) -> None:
    commands = {
        name: tuple(service["command"])
        for name, service in _services(compose).items()
        if _one_shot(service)
    }
    assert ("airflow", "db", "migrate") in commands.values()
    assert any("create_bucket.py" in " ".join(c) for c in commands.values())


def test_data_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    named = set(compose["volumes"])
    for name, service in _services(compose).items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, Mapping) else volume.split(":")[0]
            assert source in named, f"{name}: {volume} is not a named volume"
    for config in compose.get("configs", {}).values():
        assert (REPO_ROOT / config["file"]).is_file(), config


def test_stateful_services_keep_their_data(compose: dict[str, Any]) -> None:
    services = _services(compose)
    mounts = {
        name: {v.split(":")[1] for v in service.get("volumes", [])}
        for name, service in services.items()
    }
    assert "/var/lib/postgresql/data" in mounts["postgres"]
    assert "/data" in mounts["redis"]
    assert "/data" in mounts["seaweedfs"]
    assert "/var/lib/prewarm" in mounts["airflow-worker"]
    assert "/var/lib/prewarm" in mounts["feast"]


def test_published_ports_stay_on_the_bind_address(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    published = [port for s in _services(compose).values() for port in s.get("ports", [])]
    assert published
    assert all(port.startswith(f"{env_example['BIND_ADDRESS']}:") for port in published)
    assert env_example["BIND_ADDRESS"] == "127.0.0.1"


# --- settings -----------------------------------------------------------------------------


def _prewarm_environments(
    compose: dict[str, Any], env_example: dict[str, str]
) -> dict[str, dict[str, str]]:
    environments = {}
    for name, service in _services(compose).items():
        env = resolved_environment(service, env_example)
        environments[name] = {k: v for k, v in env.items() if k.startswith("PREWARM_")}
    return environments


def test_every_prewarm_variable_is_a_settings_field(raw: dict[str, Any]) -> None:
    names = {
        name
        for service in _services(raw).values()
        for name in environment(service)
        if name.startswith("PREWARM_")
    }
    assert {"PREWARM_HOME", "PREWARM_ROUTER__STATE", "PREWARM_AWS__PLACEMENTS"} <= names
    unknown = {n for n in names - set(NOT_SETTINGS) if _settings_field(n) is None}
    assert unknown == set()


def test_optional_variables_documented_by_example_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    examples = {
        name: value
        for name, value in commented_examples(ENV_EXAMPLE).items()
        if name.startswith("PREWARM_")
    }
    assert examples
    for name, value in examples.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    for name, value in examples.items():
        expected = TypeAdapter(_settings_field(name).annotation).validate_json(value)
        assert _settings_value(settings, name) == expected, name


def test_prewarm_variables_parse_and_take_effect(
    compose: dict[str, Any], env_example: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for service, env in _prewarm_environments(compose, env_example).items():
        if not env:
            continue
        for name in list(os.environ):
            if name.startswith("PREWARM_"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = Settings()
        for name, value in env.items():
            if name in NOT_SETTINGS:
                continue
            expected = TypeAdapter(_settings_field(name).annotation).validate_python(value)
            assert _settings_value(settings, name) == expected, f"{service}: {name}"


def test_router_runs_in_production_mode_on_redis(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    env = resolved_environment(_services(compose)["router"], env_example)
    assert env["PREWARM_ROUTER__PRODUCTION"] == "true"
    assert env["PREWARM_ROUTER__STATE"] == "redis"
    assert env["PREWARM_ROUTER_TOKEN"]


def test_router_token_variable_is_the_one_the_router_reads(raw: dict[str, Any]) -> None:
    token_env = Settings().router.token_env
    assert token_env in NOT_SETTINGS
    holders = {name for name, s in _services(raw).items() if token_env in environment(s)}
    assert holders == {"router", "airflow-worker"}


def test_only_the_workers_hold_the_ledger_and_the_cloud_credentials(raw: dict[str, Any]) -> None:
    services = _services(raw)
    ledger_url = "PREWARM_PROVISIONING__LEDGER_URL"
    ledger = {name for name, s in services.items() if ledger_url in environment(s)}
    assert ledger == {"airflow-worker"}
    # The host's AWS credentials are passed through (no value); S3 keys are set explicitly.
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        passed = {name for name, s in services.items() if environment(s).get(variable, "") is None}
        assert passed == {"airflow-worker"}, variable
    for name, service in services.items():
        value = environment(service).get("AWS_ACCESS_KEY_ID")
        assert value is None or "${S3_ACCESS_KEY" in value, name


def test_local_profile_points_the_aws_provider_at_moto(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    services = _services(compose)
    assert services["moto"]["profiles"] == ["local"]
    assert "local" in env_example["COMPOSE_PROFILES"].split(",")
    worker = resolved_environment(services["airflow-worker"], env_example)
    endpoint = urlsplit(worker["PREWARM_AWS__ENDPOINT_URL"])
    assert endpoint.hostname == "moto" and endpoint.port == 5000
    assert worker["PREWARM_PROVISIONING__PROVIDER"] == "aws"
    production = {k: v for k, v in env_example.items() if not k.startswith(("AWS_", "PREWARM_AWS"))}
    assert "PREWARM_AWS__ENDPOINT_URL" not in resolved_environment(
        services["airflow-worker"], production
    )


def test_airflow_components_share_one_configuration(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    shared = (
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    )
    airflow = {
        name: resolved_environment(s, env_example)
        for name, s in _services(compose).items()
        if name.startswith("airflow-")
    }
    assert set(AIRFLOW_COMPONENTS) <= set(airflow)
    for key in shared:
        assert len({env[key] for env in airflow.values()}) == 1, key
    assert airflow["airflow-worker"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


# --- the programs the services run --------------------------------------------------------


def _runs(compose: dict[str, Any], program: str) -> list[Invocation]:
    return [i for i in invocations(compose) if i.argv and i.argv[0] == program]


def test_prewarm_commands_exist(compose: dict[str, Any]) -> None:
    from prewarm.cli import app

    runner = CliRunner()
    calls = _runs(compose, "prewarm")
    assert calls, "no service runs prewarm"
    for call in calls:
        words = [a for a in call.argv[1:] if not a.startswith("-")]
        options = [a.split("=")[0] for a in call.argv[1:] if a.startswith("--")]
        path = words[: len(words) - _positional_values(call.argv[1:])]
        result = runner.invoke(app, [*path, "--help"])
        if result.exit_code != 0 and path[:1] == ["router"]:
            pytest.xfail("`prewarm router serve` is being written by another engineer")
        assert result.exit_code == 0, (call, result.output)
        for option in options:
            assert option in result.output, (call, option)


def _positional_values(args: tuple[str, ...]) -> int:
    """How many bare words in ``args`` are option values (``--host 0.0.0.0``)."""
    return sum(
        1
        for before, word in itertools.pairwise(args)
        if before.startswith("--") and "=" not in before and not word.startswith("-")
    )


def test_airflow_commands_and_options_exist(
    compose: dict[str, Any], env_example: dict[str, str], tmp_path: Path
) -> None:
    calls = _runs(compose, "airflow")
    expected = {"db", "api-server", "scheduler", "dag-processor", "triggerer", "celery", "jobs"}
    assert {call.argv[1] for call in calls} >= expected
    services = _services(compose)
    env = resolved_environment(services["airflow-worker"], env_example)
    options = sorted(
        {
            tuple(name.removeprefix("AIRFLOW__").lower().split("__", 1))
            for name in env
            if name.startswith("AIRFLOW__")
        }
    )
    child_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PREWARM_"))},
        **env,
        "AIRFLOW_HOME": str(tmp_path),
        # Parsing needs no database; keep the child from ever reaching for one.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
    }
    request = {"commands": [list(c.argv[1:]) for c in calls], "options": options}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("airflow_probe.py"))],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=child_env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    failed = {argv: why for argv, why in report["commands"].items() if why != "ok"}
    unknown = {tuple(o) for o in report["unknown_options"]}
    assert "apache-airflow-providers-celery" in report["providers"]
    assert failed == {}
    assert unknown == set()


def _click_params(group, argv: list[str]) -> dict[str, Any]:
    """Parse ``argv`` with a click group and its subcommand, without running anything."""
    context = group.make_context(group.name or "cli", list(argv))
    rest = [*getattr(context, "_protected_args", []), *context.args]
    name, command, rest = group.resolve_command(context, rest)
    return command.make_context(name, rest, parent=context).params


@pytest.mark.slow  # importing MLflow's CLI takes seconds
def test_mlflow_server_is_locked_down_and_uses_postgres_and_s3(
    compose: dict[str, Any], env_example: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.cli import cli

    services = _services(compose)
    (call,) = _runs(compose, "mlflow")
    server_env = resolved_environment(services[call.service], env_example)
    for name, value in server_env.items():
        monkeypatch.setenv(name, value)
    params = _click_params(cli, list(call.argv[1:]))
    allowed = params["allowed_hosts"].split(",")
    assert allowed and "*" not in allowed
    assert not params["disable_security_middleware"]
    assert params["backend_store_uri"].startswith("postgresql")
    assert params["serve_artifacts"]
    bucket = resolved_environment(services["s3-init"], env_example)["S3_BUCKET"]
    assert params["artifacts_destination"] == f"s3://{bucket}"
    worker_env = resolved_environment(services["airflow-worker"], env_example)
    tracking = urlsplit(worker_env["PREWARM_MLFLOW__TRACKING_URI"])
    assert tracking.netloc in allowed
    assert str(tracking.port) == str(params["port"])
    assert urlsplit(server_env["MLFLOW_S3_ENDPOINT_URL"]).hostname in services


@pytest.mark.slow  # importing Feast's CLI takes seconds
def test_feast_server_serves_the_repository_the_code_writes(
    compose: dict[str, Any], env_example: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from feast.cli.cli import cli

    from features.store import repo_path

    (call,) = _runs(compose, "feast")
    params = _click_params(cli, list(call.argv[1:]))
    assert params["host"] == "0.0.0.0"
    chdir = call.argv[call.argv.index("-c") + 1]
    env = resolved_environment(_services(compose)[call.service], env_example)
    monkeypatch.setenv("PREWARM_HOME", env["PREWARM_HOME"])
    assert str(repo_path(Settings())) == chdir


def test_python_entry_points_exist(compose: dict[str, Any]) -> None:
    calls = _runs(compose, "python")
    assert calls
    for call in calls:
        if call.argv[1] == "-c":
            tree = ast.parse(call.argv[2])
            imports = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
            assert imports, call
            for node in imports:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), (call, alias.name)
        else:
            script = Path(call.argv[1])
            assert script.is_relative_to(IMAGE_CHECKOUT), call
            assert (REPO_ROOT / script.relative_to(IMAGE_CHECKOUT)).is_file(), call


# --- the image ----------------------------------------------------------------------------


def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = (line.strip() for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_image_is_python_311_slim_pinned_and_runs_unprivileged() -> None:
    lines = _dockerfile()
    (base,) = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert f"WORKDIR {IMAGE_CHECKOUT}" in lines


def test_image_installs_the_pinned_environment_with_cpu_torch() -> None:
    text = "\n".join(_dockerfile())
    pins = dict(
        line.split("==", 1)
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line
    )
    assert f"ARG TORCH_VERSION={pins['torch']}" in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    torch_at = text.index('--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"')
    requirements_at = text.index("pip install --requirement requirements.txt")
    assert torch_at < requirements_at
    assert "pip install --no-deps --no-build-isolation --editable ." in text


def test_build_context_leaves_out_environments_state_and_secrets() -> None:
    ignored = set(DOCKERIGNORE.read_text().split())
    assert {".git", ".env", ".venv", "var"} <= ignored
    assert "!.env.example" in ignored


def test_image_paths_agree_with_the_compose_file(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    lines = _dockerfile()
    image_env = dict(
        re.findall(r"(\w+)=(\S+)", " ".join(line for line in lines if line.startswith("ENV ")))
    )
    worker = resolved_environment(_services(compose)["airflow-worker"], env_example)
    assert worker["PREWARM_HOME"] == image_env["PREWARM_HOME"]
    assert worker["AIRFLOW_HOME"] == image_env["AIRFLOW_HOME"]
    dags = f"{IMAGE_CHECKOUT}/{Path(worker['PREWARM_DAGS_FOLDER']).name}"
    assert worker["PREWARM_DAGS_FOLDER"] == worker["AIRFLOW__CORE__DAGS_FOLDER"] == dags
    assert (REPO_ROOT / Path(dags).relative_to(IMAGE_CHECKOUT)).is_dir()
