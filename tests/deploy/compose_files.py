"""docker-compose.yml and .env.example read the way Docker Compose reads them, for static tests.

Compose interpolates ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}`` and ``$VAR`` in every string of the file, and
``$$`` is a literal dollar. An ``environment`` entry without a value passes the variable
through from the shell or the ``.env`` file (unset in the container when neither has it).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
SCHEMA_FILE = Path(__file__).with_name("compose-spec.json")

_REFERENCE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_]\w*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.DOTALL)
_ENV_LINE = re.compile(r"^\s*(?P<comment>#\s*)?(?P<name>[A-Za-z_]\w*)=(?P<value>.*)$")


class InterpolationError(ValueError):
    """A reference Compose would refuse: malformed, or a required variable that is not set."""


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as Compose parses it before interpolation (anchors and merges applied)."""
    return yaml.safe_load(path.read_text())


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """The ``NAME=value`` lines of an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        match = _ENV_LINE.match(line)
        if match and not match["comment"]:
            values[match["name"]] = _unquote(match["value"].strip())
    return values


def commented_examples(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """The ``# NAME=value`` lines of an env file: optional variables shown with an example."""
    values = {}
    for line in path.read_text().splitlines():
        match = _ENV_LINE.match(line)
        if match and match["comment"] and match["value"].strip():
            values[match["name"]] = _unquote(match["value"].strip())
    return values


def documented_names(path: Path = ENV_EXAMPLE) -> set[str]:
    """Every variable an env file names, set or shown commented out (``# NAME=``)."""
    return {m["name"] for line in path.read_text().splitlines() if (m := _ENV_LINE.match(line))}


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree (keys are not interpolated by Compose)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def referenced_variables(text: str) -> set[str]:
    """The variables a string interpolates (``$$`` escapes excluded)."""
    names = set()
    for match in _REFERENCE.finditer(text):
        if match["escaped"]:
            continue
        if match["named"]:
            names.add(match["named"])
            continue
        parsed = _BRACED.match(match["braced"])
        if parsed is None:
            raise InterpolationError(f"malformed reference ${{{match['braced']}}} in {text!r}")
        names.add(parsed["name"])
        if parsed["arg"]:
            names |= referenced_variables(parsed["arg"])
    return names


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with every reference replaced as Compose replaces it from ``env``."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        parsed = _BRACED.match(match["braced"])
        if parsed is None:
            raise InterpolationError(f"malformed reference ${{{match['braced']}}} in {text!r}")
        name, op, arg = parsed["name"], parsed["op"], parsed["arg"] or ""
        value = env.get(name)
        is_set, has_value = value is not None, bool(value)
        present = has_value if op and op.startswith(":") else is_set
        if op in (":-", "-"):
            return value if present else interpolate(arg, env)
        if op in (":?", "?"):
            if not present:
                raise InterpolationError(f"{name}: {interpolate(arg, env) or 'required'}")
            return value
        if op in (":+", "+"):
            return interpolate(arg, env) if present else ""
        return value or ""

    return _REFERENCE.sub(replace, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """A parsed YAML tree with every string interpolated (None stays None)."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, Mapping):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    return node


def environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's ``environment`` as a mapping (list form ``NAME=value`` / ``NAME`` too)."""
    raw = service.get("environment") or {}
    if isinstance(raw, Mapping):
        return {name: None if value is None else str(value) for name, value in raw.items()}
    entries: dict[str, str | None] = {}
    for entry in raw:
        name, sep, value = entry.partition("=")
        entries[name] = value if sep else None
    return entries


def resolved_environment(
    service: Mapping[str, Any], env: Mapping[str, str]
) -> dict[str, str]:
    """What the container's environment gets from the service: pass-throughs resolved from
    ``env`` and dropped when ``env`` lacks them (the service must already be interpolated)."""
    resolved = {}
    for name, value in environment(service).items():
        if value is not None:
            resolved[name] = value
        elif name in env:
            resolved[name] = env[name]
    return resolved


@dataclass(frozen=True)
class Invocation:
    """One program a service runs: as its command, or in its healthcheck."""

    service: str
    where: str  # "command" or "healthcheck"
    argv: tuple[str, ...]


def invocations(compose: Mapping[str, Any]) -> list[Invocation]:
    """Every command line of every service, split into argv (shell forms split like a shell;
    a healthcheck's ``CMD-SHELL`` pipeline or ``||`` chain gives one argv per program)."""
    found = []
    for name, service in compose["services"].items():
        command = service.get("command")
        if command is not None:
            for argv in _split(command):
                found.append(Invocation(name, "command", argv))
        test = (service.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test and test[0] == "CMD":
            found.append(Invocation(name, "healthcheck", tuple(test[1:])))
        elif isinstance(test, list) and test and test[0] == "CMD-SHELL":
            for argv in _split(" ".join(test[1:])):
                found.append(Invocation(name, "healthcheck", argv))
        elif isinstance(test, str):
            for argv in _split(test):
                found.append(Invocation(name, "healthcheck", argv))
    return found


def _split(command: str | list[str]) -> list[tuple[str, ...]]:
    if isinstance(command, list):
        return [tuple(str(part) for part in command)]
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    argvs, current = [], []
    for token in lexer:
        if set(token) <= set("|&;"):
            if current:
                argvs.append(tuple(current))
            current = []
        else:
            current.append(token)
    if current:
        argvs.append(tuple(current))
    return argvs


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value
