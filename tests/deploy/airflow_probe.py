"""Ask the installed Airflow whether command lines and config options exist (run as a script).

Reads ``{"commands": [[...], ...], "options": [[section, key], ...]}`` on stdin and prints
``{"commands": {"argv joined": "ok" | error}, "unknown_options": [...], "providers": [...]}``.
It runs in its own process because Airflow reads its configuration from the environment once,
on import: the test starts it with the compose service's environment.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def main() -> None:
    """Parse every command with Airflow's own CLI parser and look every option up."""
    request = json.load(sys.stdin)
    from airflow.cli.cli_parser import get_parser
    from airflow.configuration import conf
    from airflow.providers_manager import ProvidersManager

    parser = get_parser()
    commands = {}
    for argv in request["commands"]:
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                parser.parse_args(argv)
            commands[" ".join(argv)] = "ok"
        except SystemExit:
            commands[" ".join(argv)] = errors.getvalue().strip().splitlines()[-1]
    described = conf.configuration_description
    unknown = [
        [section, key]
        for section, key in request["options"]
        if key not in described.get(section, {}).get("options", {})
    ]
    providers = sorted(ProvidersManager().providers)
    print(json.dumps({"commands": commands, "unknown_options": unknown, "providers": providers}))


if __name__ == "__main__":
    main()
