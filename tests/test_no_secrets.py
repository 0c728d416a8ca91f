"""No secret in the repository: every git-tracked file is scanned for credentials.

What counts as a secret: an AWS access key id (AKIA…/ASIA…) or a secret access key assigned in
the clear, a private key block, a known token format (GitHub, Slack, Google, Stripe, a JWT), a
URL with a password in it, and a password/secret/token/key assigned a literal value.

What does not (the allowlist): documented placeholders (``change-me``, and values containing
``example``, ``placeholder``, ``dummy``, ``fake``, ``test``, ``redacted``, ``xxx``), references
instead of values (``${VAR}``, ``$VAR``, ``<your-key>``, ``os.environ[...]``), names of
environment variables (``"PREWARM_ROUTER_TOKEN"``), names that say where a secret is kept
rather than what it is (``..._PASSWORDS_FILE``, ``..._TOKEN_PATH``), and a line marked
``pragma: allowlist secret`` (the detect-secrets convention) for a reviewed exception.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 2_000_000
ALLOW_MARKER = "pragma: allowlist secret"
PLACEHOLDER_WORDS = (
    *("change-me", "changeme", "example", "placeholder", "dummy", "fake", "test", "redacted"),
    *("xxx", "your-", "your_", "<", "${", "$("),
)

# Formats that are secrets whatever they are called.
TOKEN_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "Stripe key": re.compile(r"\b[rs]k_live_[0-9A-Za-z]{20,}"),
    "JSON web token": re.compile(r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]{10,}"),
}
# A credential-looking name given a literal value: KEY=value, key: value, key = "value".
ASSIGNMENT = re.compile(
    r"""(?ix)
    (?P<name>[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)[\w.-]*)
    ["']?\s*(?::|=|:=)\s*
    (?P<quote>["']?)(?P<value>[^\s"',;)\]}]+)(?P=quote)
    """
)
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@\"']+:(?P<value>[^@\s/\"']+)@", re.I)
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# Names that hold where a secret is, not the secret: PASSWORDS_FILE, TOKEN_PATH, SECRET_NAME.
REFERENCE_NAME = re.compile(r"(?i)(?:file|path|dir|name|env|var)$")
CODE_VALUE = re.compile(r"^[A-Za-z_][\w.]*(?:\(|\[|$)")
CONFIG_SUFFIXES = {".env", ".yml", ".yaml", ".ini", ".cfg", ".conf", ".toml", ".properties"}


@dataclass(frozen=True)
class Finding:
    """One suspected secret: where, and which rule matched (never the secret itself)."""

    path: Path
    line: int
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}"


def is_placeholder(value: str) -> bool:
    """Whether an assigned value is a documented placeholder or a reference, not a secret."""
    lowered = value.lower()
    if not value or any(word in lowered for word in PLACEHOLDER_WORDS):
        return True
    if value.startswith("$") or ENV_NAME.match(value):
        return True
    return lowered in {"none", "null", "true", "false", "required", "optional", "str"}


def _looks_like_code(value: str, quoted: bool, path: Path) -> bool:
    """An unquoted identifier, attribute or call (a settings attribute, say) in source code.

    In configuration files (env, YAML, INI, TOML) an unquoted value is a literal.
    """
    if quoted or _is_config(path):
        return False
    return bool(CODE_VALUE.match(value))


def _is_config(path: Path) -> bool:
    return path.suffix.lower() in CONFIG_SUFFIXES or path.name.startswith(".env")


def scan_text(text: str, path: Path) -> list[Finding]:
    """Every suspected secret in ``text`` (the contents of ``path``)."""
    findings = []
    for number, line in enumerate(text.splitlines(), start=1):
        if ALLOW_MARKER in line:
            continue
        for rule, pattern in TOKEN_PATTERNS.items():
            if pattern.search(line):
                findings.append(Finding(path, number, rule))
        for match in URL_PASSWORD.finditer(line):
            if not is_placeholder(match["value"]):
                findings.append(Finding(path, number, "password in a URL"))
        for match in ASSIGNMENT.finditer(line):
            value, quoted = match["value"], bool(match["quote"])
            if REFERENCE_NAME.search(match["name"]) or len(value) < 8 or is_placeholder(value):
                continue
            if _looks_like_code(value, quoted, path):
                continue
            findings.append(Finding(path, number, f"literal value for {match['name']}"))
    return findings


def scan_files(paths: Iterable[Path]) -> list[Finding]:
    """Every suspected secret in the text files among ``paths`` (binary and huge files skipped)."""
    findings = []
    for path in paths:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        findings.extend(scan_text(text, path))
    return findings


def tracked_files(root: Path = REPO_ROOT) -> list[Path]:
    """The files git tracks in the checkout."""
    done = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, timeout=60
    )
    return [root / name for name in done.stdout.decode().split("\0") if name]


def test_no_tracked_file_holds_a_secret() -> None:
    try:
        paths = tracked_files()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    assert paths, "git lists no files"
    findings = scan_files(paths)
    assert [str(f) for f in findings] == []


# The planted secrets are assembled at run time, so this file itself holds none.
PLANTED = {
    "AWS access key id": "aws_access_key_id = " + "AKIA" + "Q7RZ3MB5NX2KT4WD",
    "private key": "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n",
    "GitHub token": "GITHUB=" + "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "password in a URL": "url: postgresql://airflow:" + "Xk93jqLw2" + "@db:5432/airflow",
    "literal value for": "POSTGRES_PASSWORD=" + "s9Vq2Lr7Kp4z",
    "quoted literal": 'api_key = "' + "9f8e7d6c5b4a3f2e1d0c" + '"',
}


@pytest.mark.parametrize("rule", sorted(PLANTED))
def test_a_planted_secret_is_found(rule: str, tmp_path: Path) -> None:
    planted = tmp_path / "settings.env"
    planted.write_text("# configuration\n" + PLANTED[rule] + "\n")
    findings = scan_files([planted])
    assert findings, f"{rule} not found"
    assert {f.path for f in findings} == {planted}
    assert findings[0].line == 2


def test_placeholders_references_and_code_are_not_secrets(tmp_path: Path) -> None:
    clean = tmp_path / "clean.txt"
    clean.write_text(
        "\n".join(
            [
                "POSTGRES_PASSWORD=change-me",
                "AWS_SECRET_ACCESS_KEY=testing",
                "password: ${POSTGRES_PASSWORD:?set it}",
                "url: postgresql://airflow:${AIRFLOW_DB_PASSWORD}@postgres:5432/airflow",
                'TOKEN_ENV = "PREWARM_ROUTER_TOKEN"',
                "token = os.environ.get(TOKEN_ENV)",
                "push_config(config, url, token=settings.router.token)",
                "api_key = '<your-key-here>'",
                'secret = "s9Vq2Lr7Kp4z"  # pragma: allowlist secret',
            ]
        )
    )
    assert scan_files([clean]) == []
