"""The web UI in a real browser: experiments, the runs table (filter, sort, columns, paging,
live refresh), a run's page (provenance, chart, log, artifacts, model), compare, bad input."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.ui.conftest import REPO_URL, Seeded

pytestmark = pytest.mark.slow


def shot(page: Any, screenshots: Path | None, name: str) -> None:
    if screenshots is not None:
        page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def runs_url(seeded: Seeded, experiment_id: str, **query: str) -> str:
    q = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in query.items())
    return f"{seeded.url}/#/experiments/{experiment_id}" + (f"?{q}" if q else "")


def test_experiments_list_counts_runs_and_manages_experiments(
    page: Any, seeded: Seeded, screenshots: Path | None
) -> None:
    page.goto(seeded.url)
    table = page.locator("#experiments")
    workshop = table.locator(f"tr[data-experiment-id='{seeded.experiment_id}']")
    expect(workshop.locator(".runs-count")).to_have_text("4")  # 3 synthetic + the real run
    big = table.locator(f"tr[data-experiment-id='{seeded.big_experiment_id}']")
    expect(big.locator(".runs-count")).to_have_text("10000")
    shot(page, screenshots, "experiments")

    page.fill("#new-experiment", "made-in-the-browser")
    page.get_by_role("button", name="Create").click()
    expect(table.locator(".exp-name", has_text="made-in-the-browser")).to_be_visible()
    page.fill("#new-experiment", "made-in-the-browser")
    page.get_by_role(
        "button", name="Create"
    ).click()  # a duplicate name: MLflow's message, in the page
    expect(page.locator(".error")).to_contain_text("already exists")

    by_name = table.locator("tr", has=page.locator(".exp-name", has_text="to-rename"))
    row = table.locator(f"tr[data-experiment-id='{by_name.get_attribute('data-experiment-id')}']")
    row.get_by_role("button", name="Rename").click()
    row.locator("input[type=text]").fill("renamed-in-the-browser")
    row.get_by_role("button", name="Save").click()
    expect(table.locator(".exp-name", has_text="renamed-in-the-browser")).to_be_visible()

    renamed = table.locator("tr", has=page.locator(".exp-name", has_text="renamed-in-the-browser"))
    renamed.get_by_role("button", name="Delete").click()
    expect(table.locator(".exp-name", has_text="renamed-in-the-browser")).to_have_count(0)
    page.select_option("select[aria-label='Which experiments']", "deleted")
    expect(table.locator(".exp-name", has_text="renamed-in-the-browser")).to_be_visible()


def test_runs_table_filters_sorts_and_shows_chosen_columns(
    page: Any, seeded: Seeded, screenshots: Path | None
) -> None:
    page.goto(runs_url(seeded, seeded.experiment_id))
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(4)
    # The real run's source links to its commit on the forge.
    real = page.locator(f"tr[data-run-id='{seeded.iris_run}']")
    link = real.locator("td[data-column='source'] a")
    expect(link).to_have_attribute("href", re.compile(re.escape(REPO_URL) + "/commit/[0-9a-f]{40}"))
    expect(real.locator("td[data-column='entry']")).to_have_text("main")

    # Choose a param and a metric as columns.
    page.get_by_role("button", name="Columns…").click()
    page.check("input[data-column='params.max_depth']")
    page.check("input[data-column='metrics.accuracy']")
    expect(page.locator("th[data-column='metrics.accuracy']")).to_be_visible()

    # Sort by the metric, both ways.
    page.click("th[data-column='metrics.accuracy']")
    expect(page.locator("th[data-column='metrics.accuracy'] .arrow")).to_have_text("▲")
    values = page.locator("#runs tbody td[data-column='metrics.accuracy']")
    expect(values).to_have_count(4)
    ascending = [float(v) for v in values.all_inner_texts()]
    assert ascending == sorted(ascending)
    page.click("th[data-column='metrics.accuracy']")
    expect(page.locator("th[data-column='metrics.accuracy'] .arrow")).to_have_text("▼")
    expect(values.first).to_have_text(str(max(ascending)))
    shot(page, screenshots, "runs")

    # Filter with the API's grammar.
    page.fill("#filter", "params.max_depth = '5' and metrics.accuracy > 0.5")
    page.press("#filter", "Enter")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".run-link")).to_have_text("tree-depth-5")
    # The sort and columns survive the filter (they live in the URL).
    expect(page.locator("th[data-column='params.max_depth']")).to_be_visible()

    page.fill("#filter", "params.max_depth = '5' and")
    page.press("#filter", "Enter")
    error = page.locator("#runs-message .error")
    expect(error).to_contain_text("The filter or sort does not work")
    expect(error).to_contain_text("position")
    assert "Traceback" not in page.content()
    shot(page, screenshots, "filter-error")


def test_run_names_and_tags_render_as_text(page: Any, seeded: Seeded) -> None:
    page.goto(runs_url(seeded, seeded.experiment_id))
    evil = page.locator(".run-link", has_text="<script>alert(1)</script>")
    expect(evil).to_have_count(1)
    evil.click()
    expect(page.locator("#run-name")).to_have_text("<script>alert(1)</script>")
    expect(page.locator("#tags tr[data-key='team'] td")).to_have_text("<b>ml</b>")
    assert page.locator("b", has_text="ml").count() == 0
    page.click("#artifacts .name:text('notes.txt')")
    expect(page.locator("#artifact-preview pre")).to_contain_text("<script>alert('x')</script>")
    # (the page fixture fails the test on any dialog: no alert ever ran)


def test_run_page_shows_provenance_model_log_chart_and_artifacts(
    page: Any, seeded: Seeded, screenshots: Path | None
) -> None:
    page.goto(runs_url(seeded, seeded.experiment_id))
    page.click(f"tr[data-run-id='{seeded.iris_run}'] .run-link")
    expect(page.locator("#run-name")).to_have_text("iris-real")
    expect(page.locator("#run-status")).to_have_text("FINISHED")
    expect(page.locator("#params tr[data-key='max_depth'] td")).to_have_text("3")
    expect(page.locator("#metrics tr[data-key='accuracy'] td")).to_have_text(re.compile(r"0\.\d+"))
    provenance = page.locator("#provenance")
    expect(page.locator("#commit-link")).to_have_attribute(
        "href", re.compile(re.escape(REPO_URL) + "/commit/[0-9a-f]{40}$")
    )
    expect(provenance.locator("tr[data-key='Dirty'] td")).to_have_text("no")
    expect(provenance.locator("#run-command")).to_contain_text("python train.py --max_depth 3")
    expect(provenance.locator("tr[data-key='Environment'] td")).to_contain_text("local")
    # The log, and the logged model's description (the iris example logs one).
    expect(page.locator("#log")).to_contain_text("accuracy=")
    expect(page.locator("#artifacts li[data-path='model']")).to_be_visible()
    model = page.locator("#models .model")
    expect(model).to_have_count(1)
    expect(model.locator("h3")).to_contain_text("model")
    expect(model.locator("code")).to_have_text(
        f'reprorun.load_model("runs:/{seeded.iris_run}/model")'  # how to load it (Python)
    )
    expect(model.locator(".model-description")).to_contain_text("sklearn.tree")
    # The chart: a path with data.
    expect(page.locator("#chart svg path[data-points]")).to_have_count(1)
    shot(page, screenshots, "run")

    # Open a folder of the artifacts browser and preview the model description.
    page.click("#artifacts li[data-path='model'] > .dir")
    page.click("#artifacts li[data-path='model/MLmodel'] .name")
    expect(page.locator("#artifact-preview pre")).to_contain_text("flavors")


def test_metric_chart_smoothing_log_scale_and_time_axis(page: Any, seeded: Seeded) -> None:
    page.goto(f"{seeded.url}/#/runs/{seeded.runs['tree-depth-2']}")
    page.select_option("#chart-metric", "loss")
    path = page.locator("#chart svg path[data-points='40']")
    expect(path).to_have_count(1)
    raw = path.get_attribute("d")
    assert raw and raw.count("L") == 39
    page.locator("#chart-smoothing").fill("0.9")
    expect(page.locator("#chart svg path[stroke-opacity]")).to_have_count(1)  # raw, faint
    assert page.locator("#chart svg path[data-points='40']").get_attribute("d") != raw
    page.check("#chart-log")
    expect(page.locator("#chart svg[aria-label*='loss']")).to_have_count(1)
    expect(page.locator("#chart svg text", has_text="(log)")).to_have_count(1)
    page.select_option("#chart-x", "relative")
    expect(page.locator("#chart svg text", has_text="seconds since first point")).to_have_count(1)


def test_artifact_previews_and_download(
    page: Any, seeded: Seeded, tmp_path: Path, screenshots: Path | None
) -> None:
    run_id = seeded.runs["tree-depth-5"]
    page.goto(f"{seeded.url}/#/runs/{run_id}")
    artifacts = page.locator("#artifacts")
    artifacts.locator("li[data-path='data'] > .dir").click()
    artifacts.locator("li[data-path='data/summary.json'] .name").click()
    expect(page.locator("#artifact-preview pre[data-kind='json']")).to_contain_text('"depth": 5')
    artifacts.locator("li[data-path='data/predictions.csv'] .name").click()
    csv = page.locator("#artifact-preview table[data-kind='csv']")
    expect(csv.locator("tbody tr")).to_have_count(2)
    expect(csv.locator("tbody tr").first.locator("td").nth(2)).to_have_text("a, quoted")
    artifacts.locator("li[data-path='confusion.png'] .name").click()
    image = page.locator("#artifact-preview img")
    expect(image).to_be_visible()
    page.wait_for_function("document.querySelector('#artifact-preview img').naturalWidth === 24")
    shot(page, screenshots, "artifacts")

    with page.expect_download() as info:
        artifacts.locator("li[data-path='data/summary.json'] .download").click()
    saved = tmp_path / "summary.json"
    info.value.save_as(saved)
    assert json.loads(saved.read_text()) == {"depth": 5, "ok": True}


def test_compare_two_runs(page: Any, seeded: Seeded, screenshots: Path | None) -> None:
    page.goto(runs_url(seeded, seeded.experiment_id))
    for name in ("tree-depth-2", "tree-depth-5"):
        page.check(f"tr[data-run-id='{seeded.runs[name]}'] input[type=checkbox]")
    expect(page.locator("#compare")).to_be_enabled()
    page.click("#compare")
    table = page.locator("#compare-table")
    expect(table.locator("thead th a")).to_have_count(2)
    expect(table.locator("tr[data-key='param.max_depth']")).to_have_class("diff")
    expect(table.locator("tr[data-key='run.entry point']")).not_to_have_class("diff")
    page.check("#only-differences")
    expect(table.locator("tr[data-key='run.entry point']")).to_be_hidden()
    # Both runs drawn in the metric chart, then against their parameters.
    page.select_option("#chart-metric", "loss")
    expect(page.locator("#chart svg path[data-series]")).to_have_count(2)
    page.select_option("#relation-metric", "accuracy")
    expect(page.locator("#relation svg polyline")).to_have_count(2)
    shot(page, screenshots, "compare")
    page.select_option("#relation-kind", "scatter")
    page.select_option("#relation-param", "max_depth")
    expect(page.locator("#relation svg circle")).to_have_count(2)


def test_ten_thousand_runs_are_paged_by_the_server(page: Any, seeded: Seeded) -> None:
    page.goto(runs_url(seeded, seeded.big_experiment_id, order="metrics.score DESC"))
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(50)
    expect(page.locator("#page-info")).to_have_text("Runs 1–50")
    page.click("#next-page")
    expect(page.locator("#page-info")).to_have_text("Runs 51–100")
    expect(rows).to_have_count(50)
    page.select_option("select[aria-label='Runs per page']", "250")
    expect(rows).to_have_count(250)


def test_bad_input_gets_a_clear_message(page: Any, seeded: Seeded) -> None:
    page.goto(f"{seeded.url}/#/runs/0123456789abcdef0123456789abcdef")
    expect(page.locator(".error")).to_contain_text("No run 0123456789abcdef0123456789abcdef")
    page.goto(f"{seeded.url}/#/experiments/424242")
    expect(page.locator(".error")).to_contain_text("424242")
    page.goto(f"{seeded.url}/#/nowhere")
    expect(page.locator(".error")).to_contain_text("No page")
    assert "Traceback" not in page.content()

    run_id = seeded.runs["tree-depth-2"]
    # A link to an artifact outside the run: the server's refusal, in the page.
    page.goto(f"{seeded.url}/#/runs/{run_id}?artifact=..%2F..%2F..%2Fsecret.txt")
    refusal = page.locator("#artifact-preview .error")
    expect(refusal).to_contain_text("must not contain '..'")
    assert "never served" not in page.content()
    # The same link to a real file shows it.
    page.goto(f"{seeded.url}/#/runs/{run_id}?artifact=data%2Fsummary.json")
    expect(page.locator("#artifact-preview pre[data-kind='json']")).to_contain_text('"depth": 2')

    for path in ("../../../secret.txt", "..%2F..%2F..%2Fsecret.txt", "/etc/passwd", "data/../../x"):
        url = f"{seeded.url}/ui-api/runs/{run_id}/artifact?path={path}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url)
        body = json.loads(refused.value.read())
        assert refused.value.code == 400, body
        assert "never served" not in json.dumps(body)
        assert "artifact" in body["message"]


def test_live_refresh_follows_a_running_run(page: Any, seeded: Seeded) -> None:
    from reprorun.tracking.store.rest import RestStore

    store = RestStore(seeded.url)
    experiment_id = store.create_experiment("live")
    run = store.create_run(experiment_id, run_name="still-going")
    log = Path(run.info.artifact_uri.replace("mlflow-artifacts:", str(seeded.server.artifacts)))
    log = log / "logs" / "run.log"
    log.parent.mkdir(parents=True)
    log.write_text("epoch 1\n")

    page.goto(runs_url(seeded, experiment_id))
    expect(page.locator("#live")).to_be_visible()
    page.click(".run-link")
    expect(page.locator("#log")).to_have_text("epoch 1\n")
    with log.open("a") as out:
        out.write("epoch 2\n")
    expect(page.locator("#log")).to_contain_text("epoch 2")  # followed without a reload

    # New metric values reach the table and the chart while the run runs.
    import time

    from reprorun.tracking.entities import Metric, RunStatus

    now = int(time.time() * 1000)
    store.log_batch(
        run.info.run_id, metrics=[Metric("loss", 1 / (s + 1), now, s) for s in range(5)]
    )
    expect(page.locator("#metrics tr[data-key='loss'] td")).to_have_text("0.2")
    expect(page.locator("#chart svg path[data-points='5']")).to_have_count(1)

    store.update_run(run.info.run_id, status=RunStatus.FINISHED)
    expect(page.locator("#run-status")).to_have_text("FINISHED")
    page.go_back()
    expect(page.locator("#runs [data-status='FINISHED']")).to_have_count(1)
    expect(page.locator("#live")).to_be_hidden()


def test_runs_of_several_experiments_in_one_table(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.url)
    for experiment_id in (seeded.experiment_id, seeded.big_experiment_id):
        page.check(f"tr[data-experiment-id='{experiment_id}'] input[type=checkbox]")
    page.get_by_role("button", name="Runs of selected experiments").click()
    expect(page.locator("h1")).to_contain_text("2 experiments")
    page.fill("#filter", "attributes.run_name LIKE 'tree-depth-%' or")
    page.press("#filter", "Enter")
    expect(page.locator("#runs-message .error")).to_contain_text("OR")
    page.fill("#filter", "attributes.run_name IN ('tree-depth-2', 'point-00003')")
    page.press("#filter", "Enter")
    cells = page.locator("#runs tbody td[data-column='experiment']")
    expect(cells).to_have_count(2)
    assert sorted(cells.all_inner_texts()) == ["sweep-10k", "workshop"]


def test_system_metrics_are_their_own_group_of_charts(page: Any, seeded: Seeded) -> None:
    from reprorun.tracking.entities import Metric, RunStatus
    from reprorun.tracking.store.rest import RestStore

    store = RestStore(seeded.url)
    experiment_id = store.create_experiment("system-metrics")
    run = store.create_run(experiment_id, run_name="sampled")
    t0 = 1_800_000_000_000
    points = [Metric("loss", 1 / (s + 1), t0 + s * 10_000, s) for s in range(6)]
    for key in ("cpu_utilization_percentage", "process_memory_rss_megabytes"):
        points += [Metric(f"system/{key}", 10.0 * s, t0 + s * 10_000, s) for s in range(6)]
    store.log_batch(run.info.run_id, metrics=points)
    store.update_run(run.info.run_id, status=RunStatus.FINISHED)

    page.goto(f"{seeded.url}/#/runs/{run.info.run_id}")
    card = page.locator("#system-card")
    expect(card.locator("h2")).to_have_text("System metrics (2)")
    for key in ("cpu_utilization_percentage", "process_memory_rss_megabytes"):
        box = card.locator(f"[data-metric='system/{key}']")
        expect(box.locator("svg path[data-points='6']")).to_have_count(1)
        expect(box.locator("svg text", has_text="seconds")).to_have_count(1)
    # The user's metrics keep the main chart; system/* are not among its choices.
    expect(page.locator("#chart-metric option")).to_have_count(1)
    expect(page.locator("#chart svg path[data-points='6']")).to_have_count(1)
    # The metrics table still lists all of them.
    table = page.locator("#metrics tr[data-key='system/cpu_utilization_percentage']")
    expect(table).to_have_count(1)


def test_why_a_run_ended_shows_in_the_table_and_on_its_page(page: Any, seeded: Seeded) -> None:
    from reprorun.tracking.entities import RunStatus, SystemTags
    from reprorun.tracking.store.rest import RestStore

    store = RestStore(seeded.url)
    experiment_id = store.create_experiment("ended")
    run = store.create_run(experiment_id, run_name="hungry")
    store.set_tags(
        run.info.run_id,
        {
            SystemTags.EXIT_REASON: "out-of-memory",
            SystemTags.EXIT_CODE: "-9",
            SystemTags.EXIT_SIGNAL: "SIGKILL",
            SystemTags.EXIT_DETAIL: "the kernel's OOM killer killed process 12 (python3)",
        },
    )
    store.update_run(run.info.run_id, status=RunStatus.FAILED)

    page.goto(runs_url(seeded, experiment_id))
    badge = page.locator("#runs [data-status='FAILED']")
    expect(badge).to_have_text("FAILED (out-of-memory)")
    expect(badge).to_have_attribute("data-reason", "out-of-memory")
    page.click(".run-link")
    expect(page.locator("#run-status")).to_have_text("FAILED (out-of-memory)")
    expect(page.locator("body")).to_contain_text(
        "FAILED (out-of-memory) · exit code -9 (SIGKILL): the kernel's OOM killer killed process 12"
    )


def test_models_page_lists_versions_with_their_run_commit_and_lock(
    page: Any, seeded: Seeded, screenshots: Path | None
) -> None:
    """Issue 20: the models page (names, versions, aliases, the run and commit each version
    came from, its lock), linked from the run page; names render as text."""
    from reprorun.tracking.store.rest import RestStore

    store = RestStore(seeded.url)
    store.create_registered_model("iris-ui", description="the workshop's tree")
    source = f"runs:/{seeded.iris_run}/model"
    store.create_model_version("iris-ui", source, run_id=seeded.iris_run)
    store.create_model_version("iris-ui", source, run_id=seeded.iris_run)
    store.set_registered_model_alias("iris-ui", "champion", "2")
    hostile = "<img src=x onerror=alert(1)>"
    store.create_registered_model(hostile)

    page.goto(f"{seeded.url}/#/models")
    from reprorun import __version__

    expect(page.locator("#version")).to_have_text(f"reprorun {__version__}")  # not MLflow's
    row = page.locator("#models-table tr[data-model='iris-ui']")
    expect(row.locator(".latest")).to_have_text("iris-ui v2")
    expect(row.locator(".aliases")).to_have_text("@champion → v2")
    expect(page.locator(f"#models-table tr[data-model='{hostile}'] td").first).to_have_text(hostile)
    page.fill("#model-filter", "iris")
    page.press("#model-filter", "Enter")
    expect(page.locator("#models-table tbody tr")).to_have_count(1)
    shot(page, screenshots, "models")

    row.locator("td").first.locator("a").click()
    expect(page.locator("#model-name")).to_have_text("iris-ui")
    expect(page.locator("#model-description")).to_have_text("the workshop's tree")
    version = page.locator("#versions tr[data-version='2']")
    expect(version.locator(".aliases")).to_have_text("@champion")
    expect(version.locator(".run-link")).to_have_text("iris-real")
    expect(version.locator(".commit")).to_have_attribute(
        "href", re.compile(re.escape(REPO_URL) + "/commit/[0-9a-f]{40}$")
    )
    expect(version.locator(".source")).to_have_text(source)
    expect(page.locator("#model-load")).to_have_text('reprorun.load_model("models:/iris-ui/2")')
    expect(page.locator("#versions tbody tr")).to_have_count(2)

    # The version's run page says what it was registered as, and links back.
    version.locator(".run-link").click()
    expect(page.locator("#run-name")).to_have_text("iris-real")
    registered = page.locator("#registered-versions li[data-version='2']")
    expect(registered).to_contain_text("iris-ui v2")
    expect(registered).to_contain_text("@champion")
    registered.locator(".model-link").click()
    expect(page.locator("#versions tr[data-version='2']")).to_have_class("selected")
    page.goto(f"{seeded.url}/#/models/no-such-model")
    expect(page.locator(".error")).to_contain_text("no-such-model")
