"""Fixtures and helpers of the deploy tests."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.deploy.compose_files import REPO_ROOT
from tests.serving.provisioning.aws_moto import moto_server  # noqa: F401 (a fixture)


def load_deploy_script(name: str) -> ModuleType:
    """The script ``deploy/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
