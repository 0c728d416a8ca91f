"""The role definitions agree with the telemetry schema and describe distinct jobs."""

from __future__ import annotations

import numpy as np

from core.schema import APPS, ROLES
from simulation.roles import APP_PROFILES, ROLE_DEFINITIONS, ROLES_BY_NAME


def test_every_schema_role_but_unknown_is_defined_once() -> None:
    assert sorted(ROLES_BY_NAME) == sorted(set(ROLES) - {"unknown"})
    assert len(ROLE_DEFINITIONS) == 8
    assert np.isclose(sum(r.share for r in ROLE_DEFINITIONS), 1.0)


def test_roles_use_only_schema_applications_and_never_idle() -> None:
    assert set(APP_PROFILES) <= set(APPS) - {"idle", "unknown"}
    for role in ROLE_DEFINITIONS:
        assert set(role.app_mix) <= set(APP_PROFILES) and role.bursts.app in APP_PROFILES
        assert all(w > 0 for w in role.app_mix.values())


def test_role_data_say_what_the_jobs_are() -> None:
    roles = ROLES_BY_NAME
    assert roles["data_scientist"].demand.cpu_cores > roles["sales"].demand.cpu_cores
    assert roles["data_scientist"].bursts.app == "ml_training"
    assert roles["designer"].bursts.app == "cad_render"
    assert (
        roles["field_engineer"].schedule.start_hour < roles["software_engineer"].schedule.start_hour
    )
    assert (
        roles["support_agent"].schedule.shift_starts
        and roles["support_agent"].schedule.weekend_rota_share > 0
    )
    for frequent in ("sales", "executive", "field_engineer"):
        assert roles[frequent].travel.propensity > 5 * roles["software_engineer"].travel.propensity
