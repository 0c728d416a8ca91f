"""What a person sees in the Airflow and MLflow UIs that `prewarm up` serves, in a real browser."""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path

import httpx
import pytest

from prewarm.demo import DAG_ORDER
from tests.ui.conftest import REPO_ROOT, UiWorld

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
RUN_TIMEOUT_S = 300.0


def doc_opening(dag_id: str, words: int = 8) -> str:
    """The first words of the DAG's ``doc_md`` prose, as the rendered Markdown shows them."""
    tree = ast.parse((REPO_ROOT / "dags" / f"{dag_id}.py").read_text())
    doc = next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "DOC" for t in node.targets)
    )
    paragraph = next(p for p in doc.strip().split("\n\n") if not p.lstrip().startswith("#"))
    plain = re.sub(r"`|\*\*", "", paragraph)  # code spans and bold lose their marks
    return " ".join(plain.split()[:words])


def squash(text: str) -> str:
    return " ".join(text.split())


def login(page, world: UiWorld) -> None:
    stack = world.stack
    page.goto(stack.airflow_url + "/")
    page.locator("input[name=username]").fill(stack.airflow_user)
    page.locator("input[name=password]").fill(stack.airflow_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(stack.airflow_url + "/")


def airflow_api(world: UiWorld) -> httpx.Client:
    """An Airflow REST client logged in as the UI's user (to follow a run the UI started)."""
    stack = world.stack
    token = httpx.post(
        stack.airflow_url + "/auth/token",
        json={"username": stack.airflow_user, "password": stack.airflow_password},
        timeout=60.0,
    ).json()["access_token"]
    # One api-server worker on SQLite answers slowly while a training task runs beside it.
    return httpx.Client(
        base_url=stack.airflow_url + "/api/v2",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60.0,
    )


def test_airflow_lists_the_four_dags_with_their_docs(ui_world, page, screenshots: Path) -> None:
    login(page, ui_world)
    page.goto(ui_world.stack.airflow_url + "/dags")
    for dag_id in DAG_ORDER:
        page.get_by_role("link", name=dag_id, exact=True).wait_for()
    page.screenshot(path=screenshots / "airflow-dags.png", full_page=True)
    for dag_id in DAG_ORDER:
        page.goto(f"{ui_world.stack.airflow_url}/dags/{dag_id}")
        page.get_by_role("button", name="Dag Docs").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text(dag_id, exact=True).wait_for()
        assert doc_opening(dag_id) in squash(dialog.inner_text())
        page.screenshot(path=screenshots / f"airflow-docs-{dag_id}.png")
        page.keyboard.press("Escape")


def test_nightly_retrain_triggered_from_the_ui_with_params_succeeds(
    ui_world, page, screenshots: Path
) -> None:
    login(page, ui_world)
    page.goto(f"{ui_world.stack.airflow_url}/dags/nightly_retrain")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    dialog.locator("input[name=element_epochs]").fill("1")
    # Train on the landed telemetry folder (the `source` Param) rather than the Feast store.
    dialog.locator("#element_source").fill(str(ui_world.telemetry))
    page.screenshot(path=screenshots / "airflow-trigger-params.png", full_page=True)
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    page.wait_for_url(re.compile(r".*/dags/nightly_retrain/runs/.+"))
    run_id = page.url.rsplit("/runs/", 1)[1]
    with airflow_api(ui_world) as api:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            run = api.get(f"/dags/nightly_retrain/dagRuns/{run_id}").raise_for_status().json()
            if run["state"] in ("success", "failed") or time.monotonic() > deadline:
                break
            time.sleep(3)
        tasks = api.get(f"/dags/nightly_retrain/dagRuns/{run_id}/taskInstances").json()
    page.reload()
    page.get_by_text("success", exact=False).first.wait_for()
    page.screenshot(path=screenshots / "airflow-nightly-retrain-run.png", full_page=True)
    states = {t["task_id"]: t["state"] for t in tasks["task_instances"]}
    assert run["state"] == "success", states
    assert run["conf"]["epochs"] == 1
    assert run["triggered_by"] == "ui"
    assert set(states) == {"build_dataset", "train", "backtest", "register", "gate"}


def test_mlflow_shows_the_champion_with_its_metrics_and_plots(
    ui_world, page, screenshots: Path
) -> None:
    from training import registry

    settings = ui_world.settings
    # Registry URI given explicitly: other tests in this process may have set mlflow's global
    # one to their own home, which a client without it would use for the alias.
    client = registry.client(settings)
    name = settings.mlflow.model_name
    champion = client.get_model_version_by_alias(name, "champion")
    run = client.get_run(champion.run_id)
    base = ui_world.stack.mlflow_url

    alias_tag = re.compile(r"^@\s*champion$")  # the alias chip, not prose that mentions it
    page.goto(f"{base}/#/models/{name}")
    page.get_by_text(f"Version {champion.version}", exact=True).first.wait_for()
    page.get_by_text(alias_tag).first.wait_for()
    page.screenshot(path=screenshots / "mlflow-model-champion.png", full_page=True)

    page.goto(f"{base}/#/models/{name}/versions/{champion.version}")
    page.get_by_text(alias_tag).first.wait_for()
    page.screenshot(path=screenshots / "mlflow-model-version.png", full_page=True)

    run_page = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    page.goto(run_page)
    shown = [key for key in ("holdout_mase_mean", "holdout_seasonal_naive_mase_mean")
             if key in run.data.metrics]  # fmt: skip
    assert shown, f"the run logged none of the expected metrics: {sorted(run.data.metrics)}"
    for key in shown:
        page.get_by_text(key, exact=True).first.wait_for()
    page.screenshot(path=screenshots / "mlflow-run-metrics.png", full_page=True)

    plots = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    assert plots, "the training run logged no plots"
    page.goto(f"{run_page}/artifacts")
    page.get_by_text("plots", exact=True).first.click()
    figure = Path(plots[0]).name
    page.get_by_text(figure, exact=True).first.click()
    page.get_by_text(f"plots/{figure}").first.wait_for()
    image = page.locator("img[src^='blob:']").first
    image.wait_for()
    loaded = "img => img.complete && img.naturalWidth > 0"
    page.wait_for_function(loaded, arg=image.element_handle())
    page.screenshot(path=screenshots / "mlflow-run-plot.png", full_page=True)
