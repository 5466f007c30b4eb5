"""The web UI's requests on 10,000 runs: reprorun's server against MLflow's, and the page itself.

    python bench/ui.py [--quick] [--browser | --no-browser] [--skip-mlflow] [--json FILE]

Seeded data, the same for both tools: bench/tracking.py's 10,000 search runs in one experiment
(params model/lr/depth, tag team, metrics acc/loss; reprorun through its store, MLflow by a bulk
insert through its own tables), then, by this script: every run FINISHED with an end time
(a random duration, so attributes.duration sorts), and every 100th run a 100-step val_loss
history (seed-00000 is the run whose page is timed; its artifact folder gets a log, a model
folder and a JSON file).

Measured on each server, over one keep-alive HTTP connection (as a browser keeps one), the
requests the UI pages make when they open; median of 5 after a warm-up request (the warm-up
counts when it took over 1 s). Each answer is checked against the seeded data.
  home page     experiments list: reprorun /ui-api/experiments (with run counts and last
                activity); MLflow GET experiments/search (max_results 25, last_update_time DESC),
                what its own UI calls
  runs page     experiments/get; runs/search (POST /ajax-api, 50 runs) first page in the default
                order, sorted by metrics.acc DESC, params.model ASC, attributes.run_name ASC,
                attributes.duration DESC (reprorun only), filtered on
                "metrics.acc > 0.9 and params.model = 'tree'", and the page at offset 5,000
                (the base64 {"offset": n} page token both servers use, checked against the
                token of the first page); /ui-api/keys (reprorun only, the columns panel)
  run page      runs/get, metrics/get-history (100 steps), artifacts/list; /ui-api/runs/<id>/log
                and /models (reprorun only)
  browser       with --browser (default when /usr/bin/chromium and the playwright package
                exist; never in --quick): headless Debian chromium through Playwright, from
                page.goto to the runs table showing its runs, median of 5 after a warm-up load,
                each in a new tab of one browser context (static files cached, as for a
                returning user). reprorun: <server>/#/experiments/<id> until `#runs tbody tr`
                has 50 rows (its page asks for 50). MLflow's own UI (React, ag-grid; it asks
                for 100 runs): <server>/#/experiments/<id>/runs, since MLflow 3.17 sends
                /#/experiments/<id> of an experiment without a kind tag to its GenAI overview,
                until 50 grid rows (`.ag-center-cols-container [role=row]`) and the newest
                run's name in a row.
Both servers run in turn (never together), each measured alone on the 2-core machine, after
waiting (--idle-wait, up to 120 s) for other work on the machine to stop.

Baseline: `mlflow server` from /tmp/bench-mlflow-venv (made when missing, as bench/env_build.py
does; MLflow 3.17.2 when written), --workers 1 (several uvicorn workers leave Nagle's algorithm
on: ~40 ms per keep-alive request, see bench/tracking.py), MLFLOW_DISABLE_TELEMETRY=true; timed
once it has gone idle after its start (its job runner and 7 huey consumers take ~15 s of both
cores after /health answers). reprorun: `reprorun server` with its defaults (1 process). Both on
SQLite, in the temp folder (--work-dir to choose), bound to 127.0.0.1; stopped and the folder
removed on exit, Ctrl-C and errors included.
Targets: every UI request on 10,000 runs under 250 ms on reprorun, and no slower than MLflow's
equivalent (reprorun-only requests: under 250 ms). The browser rows are for information.
--quick (CI smoke): 1,000 runs, one repeat, no browser, no idle wait, and MLflow's job
execution off (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: ~15 s less start-up); ~30 s.
The machine should be otherwise idle: the table reports how much CPU other processes used while
the requests were timed (not the browser's: chromium's renderers leave this process tree).

This file imports only the standard library at the top: the MLflow virtualenv runs it too
(to seed MLflow with tracking.py's client and finish the seed in its own tables).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import tracking  # noqa: E402  (bench/tracking.py: seeding, servers, CPU accounting)

Json = dict[str, Any]

PAGE_SIZE = 50  # the UI's default page
TARGET_MS = 250.0
SLOW_WARMUP_S = 1.0  # a warm-up slower than this counts as a repeat (as in tracking.py)
FILTER = tracking.SEARCH_FILTER  # "metrics.acc > 0.9 and params.model = 'tree'"
HISTORY_KEY = "val_loss"
HISTORY_STEPS = 100
HISTORY_EVERY = 100  # every 100th run has the history
CHART_RUN = "seed-00000"  # the run whose page is timed (it has the history)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
BROWSER_TIMEOUT_MS = 120_000
MLFLOW_WORKERS = 1


@dataclass(frozen=True)
class Budget:
    runs: int
    repeats: int


FULL = Budget(runs=tracking.FULL.search_runs, repeats=5)  # 10,000, as tracking.py seeds
QUICK = Budget(runs=tracking.QUICK.search_runs, repeats=1)  # 1,000


def say(message: str) -> None:
    print(message, flush=True)


# --- the seed: tracking.py's runs, finished, some with a metric history -----------------------


def experiment_name(n: int) -> str:
    return f"bench-search-{n}"  # tracking.seeded_experiment's name


def durations(n: int) -> list[int]:
    """Each seeded run's duration in ms (5 s to 2 h), the same for both tools."""
    rng = random.Random(20240602)
    return [rng.randint(5, 7200) * 1000 for _ in range(n)]


def has_history(index: int) -> bool:
    return index % HISTORY_EVERY == 0


def history(index: int, start_time: int) -> list[tracking.Point]:
    """A falling curve with a little wobble: (key, value, timestamp, step)."""
    return [
        (HISTORY_KEY, 1.0 / (1.0 + 0.05 * s) + 0.01 * ((index + s) % 7), start_time + s * 1000, s)
        for s in range(HISTORY_STEPS)
    ]


def seed(uri: str, client_kind: str, n: int) -> None:
    """tracking.py's seed (its client and experiment), then this script's additions; run by the
    tool's own python (the MLflow virtualenv's for MLflow)."""
    if client_kind == "mlflow":
        mlflow_client = tracking.MlflowClientAdapter(uri)
        exp_id = tracking.seeded_experiment(mlflow_client, n)
        finish_mlflow(mlflow_client, exp_id, n)
    else:
        from reprorun.tracking.store import close_stores

        client = tracking.ReprorunClient(uri)
        finish_reprorun(client, tracking.seeded_experiment(client, n), n)
        close_stores()


def finish_reprorun(client: tracking.ReprorunClient, exp_id: str, n: int) -> None:
    """End every seeded run and log the histories, through reprorun's store."""
    from reprorun.tracking.entities import Metric, RunStatus

    store = client.store
    ids: dict[str, str] = {}
    token: str | None = None
    while True:
        page = store.search_runs([exp_id], max_results=1000, page_token=token)
        ids.update((r.info.run_name, r.info.run_id) for r in page)
        token = page.token
        if not token:
            break
    ends = durations(n)
    for i, run in enumerate(tracking.seed_runs(n)):
        run_id = ids[run.name]
        store.update_run(run_id, status=RunStatus.FINISHED, end_time=run.start_time + ends[i])
        if has_history(i):
            store.log_batch(run_id, metrics=[Metric(*p) for p in history(i, run.start_time)])


def finish_mlflow(client: tracking.MlflowClientAdapter, exp_id: str, n: int) -> None:
    """The same as finish_reprorun, written through MLflow's own tables in one transaction
    (its API would take minutes for 10,000 runs), as tracking.py seeds it."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun
    from sqlalchemy import bindparam

    store = client.client._tracking_client.store
    try:
        session_maker = store.ManagedSessionMaker(read_only=False)
    except TypeError:  # older MLflow: no read_only argument
        session_maker = store.ManagedSessionMaker()
    ends = durations(n)
    with session_maker as session:
        ids = dict(
            session.query(SqlRun.name, SqlRun.run_uuid)
            .filter(SqlRun.experiment_id == int(exp_id))
            .all()
        )
        updates: list[Json] = []
        metrics: list[Json] = []
        latest: list[Json] = []
        for i, run in enumerate(tracking.seed_runs(n)):
            run_id = ids[run.name]
            updates.append({"b_id": run_id, "b_end": run.start_time + ends[i]})
            if has_history(i):
                rows = [
                    {
                        "key": key,
                        "value": value,
                        "timestamp": stamp,
                        "step": step,
                        "is_nan": False,
                        "run_uuid": run_id,
                    }
                    for key, value, stamp, step in history(i, run.start_time)
                ]
                metrics += rows
                latest.append(rows[-1])
        runs = SqlRun.__table__
        session.execute(
            runs.update()
            .where(runs.c.run_uuid == bindparam("b_id"))
            .values(status="FINISHED", end_time=bindparam("b_end")),
            updates,
        )
        session.execute(SqlMetric.__table__.insert(), metrics)
        session.execute(SqlLatestMetric.__table__.insert(), latest)


# --- HTTP: one keep-alive connection, timed requests ------------------------------------------


class Http:
    """A keep-alive HTTP/1.1 connection to 127.0.0.1:port, reopened when the server closes it."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(self, method: str, path: str, body: Json | None = None) -> tuple[float, int, bytes]:
        """Seconds from sending the request to the last byte of the answer, status, answer."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
                self.conn.connect()
            start = time.perf_counter()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                payload = response.read()
            except (http.client.HTTPException, ConnectionError):
                self.close()  # a keep-alive connection the server had closed: once more
                if attempt:
                    raise
                continue
            elapsed = time.perf_counter() - start
            if response.will_close:
                self.close()
            return elapsed, response.status, payload
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Json | None = None) -> Json:
        _, status, payload = self.call(method, path, body)
        if status != 200:
            sys.exit(f"{method} {path} {body or ''}: HTTP {status}: {payload[:500]!r}")
        result: Json = json.loads(payload)
        return result


def page_token(offset: int) -> str:
    """MLflow's page token format, which reprorun uses too."""
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


def token_offset(token: str | None) -> int | None:
    try:
        return int(json.loads(base64.b64decode(token or ""))["offset"])
    except (ValueError, KeyError, TypeError):
        return None


# --- the requests the pages make, and what their answers must be ------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Json | None = None


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    reprorun_only: bool = False
    browser: bool = False


def rows(n: int) -> list[Row]:
    deep = deep_offset(n)
    return [
        Row("experiments", "home: experiments list"),
        Row("experiment_get", "runs page: experiments/get"),
        Row("first_page", f"runs page: runs/search first {PAGE_SIZE}, newest first"),
        Row("order_metric", "runs page: sorted by metrics.acc DESC"),
        Row("order_param", "runs page: sorted by params.model ASC"),
        Row("order_name", "runs page: sorted by attributes.run_name ASC"),
        Row("order_duration", "runs page: sorted by attributes.duration DESC", True),
        Row("filter", "runs page: acc > 0.9 and model = 'tree'"),
        Row("deep_page", f"runs page: page at offset {deep:,} (page token)"),
        Row("keys", "runs page: /ui-api/keys (columns panel)", True),
        Row("run_get", "run page: runs/get"),
        Row("history", f"run page: metrics/get-history, {HISTORY_STEPS} steps"),
        Row("artifacts", "run page: artifacts/list"),
        Row("log", "run page: /ui-api/runs/<id>/log", True),
        Row("models", "run page: /ui-api/runs/<id>/models", True),
        Row("browser", f"browser: open runs page until {min(PAGE_SIZE, n)} rows", browser=True),
    ]


def deep_offset(n: int) -> int:
    return n // 2


def search(exp_id: str, order: str | None = None, filter_string: str = "", offset: int = 0) -> Call:
    """POST runs/search as app.js sends it."""
    body: Json = {
        "experiment_ids": [exp_id],
        "filter": filter_string,
        "max_results": PAGE_SIZE,
        "order_by": [order] if order else [],
    }
    if offset:
        body["page_token"] = page_token(offset)
    return Call("POST", "/ajax-api/2.0/mlflow/runs/search", body)


def calls(tool: str, exp_id: str, run_id: str, n: int) -> dict[str, Call]:
    ajax = "/ajax-api/2.0/mlflow"
    q = urllib.parse.urlencode
    if tool == "reprorun":
        experiments = Call("GET", "/ui-api/experiments")
    else:
        query = q({"max_results": 25, "order_by": "last_update_time DESC"})
        experiments = Call("GET", f"{ajax}/experiments/search?{query}")
    found = {
        "experiments": experiments,
        "experiment_get": Call("GET", f"{ajax}/experiments/get?{q({'experiment_id': exp_id})}"),
        "first_page": search(exp_id),
        "order_metric": search(exp_id, "metrics.acc DESC"),
        "order_param": search(exp_id, "params.model ASC"),
        "order_name": search(exp_id, "attributes.run_name ASC"),
        "filter": search(exp_id, filter_string=FILTER),
        "deep_page": search(exp_id, offset=deep_offset(n)),
        "run_get": Call("GET", f"{ajax}/runs/get?{q({'run_id': run_id})}"),
        "history": Call(
            "GET",
            f"{ajax}/metrics/get-history?"
            + q({"run_id": run_id, "metric_key": HISTORY_KEY, "max_results": 25000}),
        ),
        "artifacts": Call("GET", f"{ajax}/artifacts/list?{q({'run_id': run_id})}"),
    }
    if tool == "reprorun":
        run = urllib.parse.quote(run_id)
        found["order_duration"] = search(exp_id, "attributes.duration DESC")
        found["keys"] = Call("GET", f"/ui-api/keys?{q({'experiment_id': exp_id})}")
        found["log"] = Call("GET", f"/ui-api/runs/{run}/log?offset=0")
        found["models"] = Call("GET", f"/ui-api/runs/{run}/models")
    return found


@dataclass(frozen=True)
class Expected:
    """What the seeded data says each answer must hold."""

    n: int
    seeds: list[tracking.SeedRun] = field(repr=False)
    ends: list[int] = field(repr=False)

    @classmethod
    def of(cls, n: int) -> Expected:
        return cls(n, tracking.seed_runs(n), durations(n))

    def newest_first(self, indices: list[int]) -> list[int]:
        return sorted(indices, key=lambda i: -self.seeds[i].start_time)

    def names(self, key: str) -> list[str] | None:
        """Run names of the page ``key`` asks for, in order; None when not a runs page."""
        everything = self.newest_first(list(range(self.n)))
        s = self.seeds
        if key == "first_page":
            chosen = everything
        elif key == "deep_page":
            chosen = everything[deep_offset(self.n) :]
        elif key == "order_param":
            chosen = sorted(everything, key=lambda i: s[i].params["model"])  # stable: newest first
        elif key == "order_name":
            chosen = sorted(everything, key=lambda i: s[i].name)
        elif key == "order_duration":
            chosen = sorted(everything, key=lambda i: -self.ends[i])
        elif key == "filter":
            chosen = [i for i in everything if s[i].acc > 0.9 and s[i].params["model"] == "tree"]
        else:
            return None
        return [s[i].name for i in chosen[:PAGE_SIZE]]


def as_dict(entries: list[Json] | None) -> dict[str, Any]:
    return {e["key"]: e.get("value") for e in entries or []}


def check(key: str, tool: str, answer: Json, expected: Expected, run_id: str) -> str | None:
    """None when the answer is what the seed says; otherwise what is wrong."""
    if key in ("first_page", "deep_page", "order_param", "order_name", "order_duration", "filter"):
        runs = answer.get("runs", [])
        got = [r["info"].get("run_name") for r in runs]
        want = expected.names(key)
        if got != want:
            return f"runs {got[:3]}... ({len(got)}), expected {(want or [])[:3]}..."
        if key == "first_page" and expected.n > PAGE_SIZE:
            offset = token_offset(answer.get("next_page_token"))
            if offset != PAGE_SIZE:
                return f"next_page_token {answer.get('next_page_token')!r} is not offset 50"
        return None
    if key == "order_metric":
        got_acc = [as_dict(r["data"].get("metrics")).get("acc") for r in answer.get("runs", [])]
        want_acc = sorted((r.acc for r in expected.seeds), reverse=True)[:PAGE_SIZE]
        ok = len(got_acc) == len(want_acc) and all(
            a is not None and abs(a - w) < 1e-9 for a, w in zip(got_acc, want_acc, strict=True)
        )
        return None if ok else f"acc {got_acc[:3]}..., expected {want_acc[:3]}..."
    name = experiment_name(expected.n)
    if key == "experiments":
        exps = {e["name"]: e for e in answer.get("experiments", [])}
        if name not in exps:
            return f"no {name} among {sorted(exps)}"
        count = exps[name].get("run_count")
        if tool == "reprorun" and count != expected.n:
            return f"run_count {count}, expected {expected.n}"
        return None
    if key == "experiment_get":
        got_name = answer.get("experiment", {}).get("name")
        return None if got_name == name else f"experiment {got_name!r}"
    if key == "run_get":
        run = answer.get("run", {})
        params = as_dict(run.get("data", {}).get("params"))
        metrics = as_dict(run.get("data", {}).get("metrics"))
        ok = (
            run.get("info", {}).get("run_id") == run_id
            and params == expected.seeds[0].params
            and set(metrics) == {"acc", "loss", HISTORY_KEY}
        )
        return None if ok else f"run {run.get('info')} params {params} metrics {sorted(metrics)}"
    if key == "history":
        steps = sorted(m.get("step", 0) for m in answer.get("metrics", []))
        return (
            None if steps == list(range(HISTORY_STEPS)) else f"steps {steps[:5]}... ({len(steps)})"
        )
    if key == "artifacts":
        paths = sorted(f["path"] for f in answer.get("files", []))
        return None if paths == ["logs", "metrics.json", "model"] else f"files {paths}"
    if key == "keys":
        ok = answer.get("params") == ["depth", "lr", "model"] and answer.get("metrics") == [
            "acc",
            "loss",
            HISTORY_KEY,
        ]
        return None if ok else f"keys {answer}"
    if key == "log":
        return None if answer.get("exists") and answer.get("size", 0) > 0 else f"log {answer}"
    if key == "models":
        return None if "models" in answer else f"models {answer}"
    return None


# --- one server -------------------------------------------------------------------------------


@dataclass
class Result:
    ms: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    other_cores: float = 0.0
    startup_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def write_artifacts(artifact_uri: str) -> str | None:
    """A log, a model folder and a JSON file in the timed run's artifact folder; a note when the
    folder is not local."""
    parsed = urllib.parse.urlparse(artifact_uri)
    if parsed.scheme not in ("", "file"):
        return f"artifact URI {artifact_uri} is not a local folder: artifacts/list shows nothing"
    root = Path(urllib.parse.unquote(parsed.path))
    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "model").mkdir(exist_ok=True)
    lines = [f"step {s:4d}  val_loss {1.0 / (1.0 + 0.05 * s):.6f}\n" for s in range(2000)]
    (root / "logs" / "run.log").write_text("".join(lines))
    (root / "metrics.json").write_text(json.dumps({"acc": 0.91, "loss": 0.2}))
    (root / "model" / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: x\n")
    (root / "model" / "model.pkl").write_bytes(os.urandom(100 * 1024))
    return None


def median_ms(http_: Http, call: Call, repeats: int) -> tuple[float, int, bytes]:
    """Median time (ms) of ``repeats`` calls after a warm-up, and the last answer."""
    first, status, payload = http_.call(call.method, call.path, call.body)
    times = [first] if first >= SLOW_WARMUP_S else []
    while len(times) < repeats:
        seconds, status, payload = http_.call(call.method, call.path, call.body)
        times.append(seconds)
    return statistics.median(times) * 1000, status, payload


def measure_requests(tool: str, port: int, budget: Budget, result: Result) -> tuple[str, str]:
    """Time every UI request on the server at ``port``; returns the experiment and run ids."""
    n = budget.runs
    http_ = Http(port)
    try:
        q = urllib.parse.urlencode
        name_query = q({"experiment_name": experiment_name(n)})
        exp_id = str(
            http_.json("GET", f"/api/2.0/mlflow/experiments/get-by-name?{name_query}")[
                "experiment"
            ]["experiment_id"]
        )
        found = http_.json(
            "POST",
            "/api/2.0/mlflow/runs/search",
            {"experiment_ids": [exp_id], "filter": f"attributes.run_name = '{CHART_RUN}'"},
        ).get("runs", [])
        if len(found) != 1:
            sys.exit(f"{tool}: {len(found)} runs named {CHART_RUN}")
        run_id = str(found[0]["info"]["run_id"])
        note = write_artifacts(str(found[0]["info"]["artifact_uri"]))
        if note:
            result.notes.append(note)
        expected = Expected.of(n)
        for key, call in calls(tool, exp_id, run_id, n).items():
            ms, status, payload = median_ms(http_, call, budget.repeats)
            result.ms[key] = ms
            problem = None
            if status != 200:
                problem = f"HTTP {status}: {payload[:300]!r}"
            else:
                problem = check(key, tool, json.loads(payload), expected, run_id)
            if problem:
                result.problems.append(f"{key}: {problem}")
            say(f"  {key}: {ms:,.1f} ms" + (f"  (WRONG: {problem})" if problem else ""))
        return exp_id, run_id
    finally:
        http_.close()


def browser_available() -> bool:
    import importlib.util

    return CHROMIUM.exists() and importlib.util.find_spec("playwright") is not None


def measure_browser(
    tool: str, port: int, exp_id: str, budget: Budget, result: Result
) -> float | None:
    """Median ms from page.goto to the runs table showing its runs, in headless chromium."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import Page, sync_playwright

    rows_wanted = min(PAGE_SIZE, budget.runs)
    newest = f"seed-{budget.runs - 1:05d}"
    # MLflow 3.17 sends /#/experiments/<id> of an experiment without a kind tag to its GenAI
    # overview; its runs table ("Model training") is at /#/experiments/<id>/runs.
    route = f"experiments/{exp_id}" if tool == "reprorun" else f"experiments/{exp_id}/runs"
    url = f"http://127.0.0.1:{port}/#/{route}"
    ready = (
        "([n, newest]) => document.querySelectorAll('#runs tbody tr').length >= n"
        if tool == "reprorun"
        # ag-grid: body rows in the centre container; the run name column is pinned left
        else "([n, newest]) => document.querySelectorAll('.ag-center-cols-container "
        "[role=row]').length >= n && Array.from(document.querySelectorAll('[role=row]'))"
        ".some((row) => row.innerText.includes(newest))"
    )

    def shown(page: Page) -> None:
        page.wait_for_function(ready, arg=[rows_wanted, newest], timeout=BROWSER_TIMEOUT_MS)

    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            for i in range(budget.repeats + 1):  # the first load is the warm-up
                page = context.new_page()
                try:
                    start = time.perf_counter()
                    page.goto(url, wait_until="commit")
                    shown(page)
                    elapsed = time.perf_counter() - start
                    if tool == "reprorun":
                        first = page.locator("#runs tbody tr").first.inner_text()
                        if newest not in first:
                            result.problems.append(f"browser: first row {first!r}, not {newest}")
                except PlaywrightError as exc:
                    result.problems.append(f"browser: {str(exc).splitlines()[0]}")
                    return None
                finally:
                    page.close()
                if i > 0:
                    times.append(elapsed)
        finally:
            browser.close()
    ms = statistics.median(times) * 1000
    say(f"  browser: {ms:,.0f} ms ({', '.join(f'{t * 1000:.0f}' for t in times)})")
    return ms


# --- servers ----------------------------------------------------------------------------------


def own_cpu_seconds() -> float:
    """CPU time of this process and all its descendants, living (the servers, the browser)
    or gone (waited for by us or by them)."""
    total = 0.0
    for pid in tracking.process_tree(os.getpid()):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in stat[11:15]) / tracking.CLOCK_TICKS  # u, s, cu, cs time
    return total


def child_pids() -> set[int]:
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                    found.add(int(entry.name))
    return found


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[float]:
    """A server for the block (seconds until /health answered); stopped after it, also when
    the start is interrupted (tracking.start_server does not hand the process back then)."""
    before = child_pids()
    try:
        proc, healthy, _settled = tracking.start_server(argv, env, port, log)
    except BaseException:
        for pid in child_pids() - before:  # ours, each in its own session: its group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        raise
    try:
        yield healthy
    finally:
        tracking.stop_server(proc)


def reprorun_argv(port: int, db: Path, art: Path) -> list[str]:
    from run_overhead import reprorun_argv as command

    return [
        *command(),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        tracking.sqlite_uri(db),
        "--artifacts-destination",
        str(art),
    ]


def mlflow_argv(port: int, db: Path, art: Path) -> list[str]:
    return [
        str(tracking.MLFLOW_VENV / "bin" / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        tracking.sqlite_uri(db),
        "--artifacts-destination",
        str(art),
        "--workers",
        str(MLFLOW_WORKERS),
    ]


def mlflow_version() -> str:
    """MLflow's version in its virtualenv, made by env_build.install_mlflow when missing (it
    imports mlflow to say so: seconds; the package metadata is enough otherwise)."""
    python = tracking.MLFLOW_VENV / "bin" / "python"
    if not (tracking.MLFLOW_VENV / "bin" / "mlflow").exists():
        from env_build import install_mlflow

        return install_mlflow()
    code = "from importlib.metadata import version; print(version('mlflow'))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def other_cores(seconds: float) -> float:
    """Cores' worth of CPU used by processes other than this one's tree, over ``seconds``."""
    before = (time.perf_counter(), tracking.busy_cpu_seconds(), own_cpu_seconds())
    time.sleep(seconds)
    after = (time.perf_counter(), tracking.busy_cpu_seconds(), own_cpu_seconds())
    return max(0.0, ((after[1] - before[1]) - (after[2] - before[2])) / (after[0] - before[0]))


def wait_for_idle(limit: float) -> None:
    """Wait (up to ``limit`` seconds) until other work uses under BUSY_CORES for 2 s."""
    deadline = time.perf_counter() + limit
    while (busy := other_cores(2.0)) > tracking.BUSY_CORES:
        if time.perf_counter() > deadline:
            say(f"  the machine is still busy ({busy:.2f} cores of other work): measuring anyway")
            return
        say(f"  waiting for the machine to be idle ({busy:.2f} cores of other work)")


def measure_tool(
    tool: str,
    suite: tracking.Suite,
    budget: Budget,
    browser: bool,
    argv_for: Callable[[int, Path, Path], list[str]],
    python: str,
    env: dict[str, str],
    idle_wait: float,
) -> Result:
    """Seed, finish the seed, start the server, time the requests (and the page), stop it."""
    root = suite.root
    say(f"\n== seeding {budget.runs:,} runs for {tool}")
    start = time.perf_counter()
    db = root / f"{tool}.db"
    argv = [python, str(Path(__file__).resolve()), "--seed", tracking.sqlite_uri(db)]
    argv += ["--client", tool, *(["--quick"] if suite.quick else [])]
    subprocess.run(argv, env=env, check=True, cwd=root)
    say(f"  seeded in {time.perf_counter() - start:.1f} s (with the python start)")
    result = Result()
    port = tracking.free_port()
    log = root / f"{tool}-server.log"
    with running(argv_for(port, db, root / f"{tool}-artifacts"), env, port, log) as healthy:
        result.startup_s = healthy
        say(f"\n== {tool} server on 127.0.0.1:{port} (first /health 200 after {healthy:.2f} s)")
        if idle_wait:
            wait_for_idle(idle_wait)
        # Other work on the machine while the requests are timed (not the browser's: chromium's
        # renderers leave this process tree, so their CPU would count as other work).
        before = (time.perf_counter(), tracking.busy_cpu_seconds(), own_cpu_seconds())
        exp_id, _ = measure_requests(tool, port, budget, result)
        after = (time.perf_counter(), tracking.busy_cpu_seconds(), own_cpu_seconds())
        others = (after[1] - before[1]) - (after[2] - before[2])
        result.other_cores = max(0.0, others / (after[0] - before[0]))
        say(f"  ({after[0] - before[0]:.1f} s; other work: {result.other_cores:.2f} cores)")
        if browser:
            ms = measure_browser(tool, port, exp_id, budget, result)
            if ms is not None:
                result.ms["browser"] = ms
    return result


# --- the table --------------------------------------------------------------------------------


def verdict(row: Row, mlflow: float | None, ours: float | None) -> str:
    if row.browser:
        return "(information)"
    if ours is None:
        return "-"
    failed = []
    if ours >= TARGET_MS:
        failed.append(f"over {TARGET_MS:g} ms")
    if mlflow is not None and ours > mlflow:
        failed.append("slower than MLflow")
    return "PASS" if not failed else f"FAIL ({', '.join(failed)})"


def target_text(row: Row, skip_mlflow: bool) -> str:
    if row.browser:
        return ""
    if row.reprorun_only or skip_mlflow:
        return f"< {TARGET_MS:g} ms"
    return f"< {TARGET_MS:g} ms, <= MLflow"


def print_table(results: dict[str, Result], budget: Budget, skip_mlflow: bool) -> None:
    table = [["request", "MLflow", "reprorun", "ratio", "target", "verdict"]]
    ml, rr = results.get("mlflow"), results.get("reprorun")
    for row in rows(budget.runs):
        theirs = ml.ms.get(row.key) if ml else None
        ours = rr.ms.get(row.key) if rr else None
        if theirs is None and ours is None:
            continue
        wrong = rr is not None and any(p.startswith(f"{row.key}:") for p in rr.problems)
        ratio = tracking.ratio(ours, theirs, higher_is_better=False)
        table.append(
            [
                row.label,
                "n/a" if row.reprorun_only else tracking.show(theirs, "ms"),
                tracking.show(ours, "ms"),
                "-" if ratio is None else f"{ratio:,.1f}x",
                target_text(row, skip_mlflow),
                "FAIL (wrong result)" if wrong else verdict(row, theirs, ours),
            ]
        )
    print(f"\n{budget.runs:,} runs, median of {budget.repeats} after a warm-up")
    tracking.print_rows(table)
    print(
        "\nratio: MLflow's time / reprorun's (how many times faster reprorun is). "
        "n/a: MLflow has no such request."
    )
    busy = ", ".join(f"{tool} {r.other_cores:.2f}" for tool, r in results.items())
    print(f"CPU used by other processes while each server was measured, in cores: {busy}")
    if any(r.other_cores > tracking.BUSY_CORES for r in results.values()):
        print(f"WARNING: other work used over {tracking.BUSY_CORES} of a core: unreliable numbers")
    starts = ", ".join(f"{tool} {r.startup_s:.2f} s" for tool, r in results.items())
    print(f"server start-up to the first /health 200: {starts}")
    for tool, result in results.items():
        for problem in result.problems:
            print(f"WARNING {tool}: {problem}")
        for note in result.notes:
            print(f"note {tool}: {note}")


# --- entry point ------------------------------------------------------------------------------


def stop_on_sigterm() -> None:
    """SIGTERM/SIGHUP end the run like Ctrl-C does: servers stopped, folders removed."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 runs, one repeat, no browser")
    parser.add_argument(
        "--browser",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time the runs page in headless chromium (default: when available, not --quick)",
    )
    parser.add_argument("--skip-mlflow", action="store_true", help="reprorun only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--work-dir", type=Path, help="where the databases go (default: temp)")
    parser.add_argument(
        "--idle-wait",
        type=float,
        help="before timing a server, wait up to this many seconds for other work on the machine "
        "to stop (default: 120, 0 with --quick)",
    )
    parser.add_argument("--seed", metavar="URI", help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=("reprorun", "mlflow"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    budget = QUICK if args.quick else FULL

    if args.seed:  # in the tool's own python
        seed(args.seed, args.client or "reprorun", budget.runs)
        return

    started = time.perf_counter()
    browser = args.browser if args.browser is not None else not args.quick
    if browser and not browser_available():
        if args.browser:
            sys.exit(f"--browser needs {CHROMIUM} and the playwright package")
        browser = False
        say(f"note: no {CHROMIUM} or no playwright package: no browser timings")
    idle = args.idle_wait if args.idle_wait is not None else (0.0 if args.quick else 120.0)
    stop_on_sigterm()
    tracking.compile_reprorun()
    if not args.skip_mlflow:
        say(f"MLflow {mlflow_version()} in {tracking.MLFLOW_VENV}")
    results: dict[str, Result] = {}
    tmp = tempfile.mkdtemp(prefix="ui-bench-", dir=args.work_dir)
    try:
        # tracking.py's suite: its environments (REPRORUN_HOME in the folder, no telemetry)
        seeds = tracking.QUICK if args.quick else tracking.FULL
        suite = tracking.Suite(Path(tmp), seeds, args.quick, MLFLOW_WORKERS)
        where = tracking.filesystem(Path(tmp))
        results["reprorun"] = measure_tool(
            "reprorun", suite, budget, browser, reprorun_argv, sys.executable, suite.env, idle
        )
        if not args.skip_mlflow:
            python = str(tracking.MLFLOW_VENV / "bin" / "python")
            env = dict(suite.mlflow_env)
            if args.quick:  # its job runner and 7 huey consumers: ~15 s of 2 cores at start
                env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
            results["mlflow"] = measure_tool(
                "mlflow", suite, budget, browser, mlflow_argv, python, env, idle
            )
    except KeyboardInterrupt:
        sys.exit("interrupted: servers stopped")
    finally:
        if args.keep:
            print(f"\nwork folder kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        data = {tool: vars(result) for tool, result in results.items()}
        args.json.write_text(json.dumps({"runs": budget.runs, "results": data}, indent=1))
    print_table(results, budget, args.skip_mlflow)
    print(f"\ndatabases on {where}; mlflow server --workers {MLFLOW_WORKERS}")
    say(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
