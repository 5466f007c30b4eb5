"""``reprorun sweep``: parameter sweeps, a parent run with one child run per point."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from reprorun.cli._common import cli, handle_errors, json_option, retry_options, tracking_uri_option

if TYPE_CHECKING:
    from reprorun.projects.sweep.driver import SweepEvent


class _SweepGroup(click.Group):
    """`reprorun sweep URI -P ...` starts a sweep: a first argument that is not a subcommand
    goes to the hidden `start` subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


@cli.group("sweep", cls=_SweepGroup, invoke_without_command=False)
def sweep() -> None:
    """Parameter sweeps: one parent run, one child run per point.

    \b
    Start one (every value is checked before anything runs; `reprorun sweep start --help`
    lists the options: --random, --seed, --max-parallel, --reuse, --metric, --dry-run...):
      reprorun sweep URI -P cp=0.01,0.02,0.05 -P maxdepth=range(2,8) --max-parallel 2
      reprorun sweep URI -P lr=loguniform(1e-4,1e-1) -P depth=randint(2,9) --random 20 --seed 1
    \b
    Then, even after a crash or a reboot:
      reprorun sweep status SWEEP_ID [--metric NAME] [--json]
      reprorun sweep resume SWEEP_ID [--allow-new-code]
      reprorun sweep retry-failed SWEEP_ID
      reprorun sweep cancel SWEEP_ID
      reprorun sweep list
    \b
    Expressions: a,b,c  range(a,b[,step])  linspace(a,b,n)  logspace(a,b,n); with --random N
    also uniform(a,b) loguniform(a,b) randint(a,b) choice(x,y,...).
    """


@sweep.command("start", hidden=True)
@click.argument("uri")
@click.option(
    "-P",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=EXPR",
    help="A parameter and its values, e.g. cp=0.01,0.02 or maxdepth=range(2,8) (repeatable).",
)
@click.option("-e", "--entry-point", default="main", show_default=True, help="Entry point name.")
@click.option("--version", "version", help="Branch, tag or commit of a git project.")
@click.option("--experiment-name", help="Experiment to record in (created if missing).")
@click.option("--env-manager", help="uv, virtualenv, conda, docker or local (as for run).")
@click.option("-b", "--backend", default="local", show_default=True, help="Where to execute.")
@click.option(
    "--backend-config", type=click.Path(dir_okay=False), help="Backend options (JSON or YAML file)."
)
@click.option("--random", "random_count", type=int, help="Sample N points instead of the grid.")
@click.option("--seed", type=int, help="Seed of --random (the same seed gives the same points).")
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Points run at once.",
)
@click.option(
    "--reuse",
    is_flag=True,
    help="A point whose FINISHED run exists (same fingerprint) is not run again.",
)
@click.option("--metric", help="Metric that ranks the runs; the summary shows the best one.")
@click.option(
    "--goal",
    type=click.Choice(["max", "min"]),
    default="max",
    show_default=True,
    help="Whether a larger or a smaller --metric is better.",
)
@tracking_uri_option
@click.option("--dry-run", is_flag=True, help="Validate and list the points; run nothing.")
@click.option(
    "--create-only",
    is_flag=True,
    help="Create the sweep and its parent run, run nothing (reprorun sweep resume runs it).",
)
@retry_options
@json_option
@handle_errors
def start_command(
    uri: str,
    params: tuple[str, ...],
    entry_point: str,
    version: str | None,
    experiment_name: str | None,
    env_manager: str | None,
    backend: str,
    backend_config: str | None,
    random_count: int | None,
    seed: int | None,
    max_parallel: int,
    reuse: bool,
    metric: str | None,
    goal: str,
    tracking_uri: str | None,
    dry_run: bool,
    create_only: bool,
    as_json: bool,
    **retry: Any,
) -> None:
    """Start a sweep of the project at URI over every -P NAME=EXPR (each point's attempts
    retried as --retries says, as for reprorun run)."""
    from reprorun.projects.sweep.create import create_sweep

    if as_json and not (dry_run or create_only):
        raise click.UsageError("--json goes with --dry-run or --create-only.")
    created = create_sweep(
        uri,
        list(params),
        entry_point=entry_point,
        version=version,
        experiment_name=experiment_name,
        env_manager=env_manager,
        backend=backend,
        backend_config=backend_config,
        random_count=random_count,
        seed=seed,
        max_parallel=max_parallel,
        reuse=reuse,
        metric=metric,
        goal=goal,
        tracking_uri=tracking_uri,
        dry_run=dry_run,
        retry=retry,
    )
    if dry_run:
        _show_points(created.points, as_json)
        return
    if as_json:
        from reprorun.cli.render import echo_json

        echo_json({"sweep_id": created.sweep_id, "parent_run_id": created.parent_run_id})
        return
    click.echo(
        f"reprorun: sweep {created.sweep_id}: {len(created.points)} points, parent run "
        f"{created.parent_run_id} (reprorun sweep status {created.sweep_id})",
        err=True,
    )
    if create_only:
        click.echo(created.sweep_id)
        return
    _drive(created.sweep_id, check_code=False)


def _show_points(points: list[dict[str, str]], as_json: bool) -> None:
    from reprorun.cli.render import echo_json, table

    if as_json:
        echo_json({"points": points})
        return
    names = list(points[0]) if points else []
    table(
        ["POINT", *[n.upper() for n in names]],
        [[str(i), *p.values()] for i, p in enumerate(points, 1)],
    )
    click.echo(f"Dry run: {len(points)} points; nothing was run or recorded.", err=True)


def _drive(
    sweep_id: str,
    *,
    allow_new_code: bool = False,
    max_parallel: int | None = None,
    check_code: bool = True,
) -> None:
    """Run the sweep with a line per ended point, then the summary; exit 1 if a point failed,
    128+N if signal N stopped the driver."""
    from reprorun.projects.sweep.driver import run_sweep

    result = run_sweep(
        sweep_id,
        on_event=_print_event,
        allow_new_code=allow_new_code,
        max_parallel=max_parallel,
        check_code=check_code,
    )
    _summary(result)
    if result["interrupted"]:
        click.echo(
            f"reprorun: sweep {sweep_id} stopped by signal {result['interrupted']}; "
            f"reprorun sweep resume {sweep_id} runs the rest",
            err=True,
        )
        sys.exit(128 + int(result["interrupted"]))
    counts = result["counts"]
    if counts["failed"] or counts["killed"] or counts["cancelled"]:
        sys.exit(1)


def _print_event(event: SweepEvent) -> None:
    from reprorun.cli.render import fmt_metric
    from reprorun.projects.sweep.state import describe_point

    if event.kind == "note":
        click.echo(f"reprorun: {event.message}", err=True)
        return
    if event.kind != "ended" or event.point is None:
        return
    point = event.point
    line = f"point {point['index']}/{event.total} {describe_point(point['params'])}: "
    line += point["status"].upper()
    if point["run_id"]:
        line += f" run {point['run_id']}"
    if point.get("reused"):
        line += " (reused)"
    elif point["status"] != "finished" and point.get("exit_code") is not None:
        line += f" (exit {point['exit_code']})"
    if event.metric is not None:
        line += f" {event.metric[0]}={fmt_metric(event.metric[1])}"
    click.echo(line)


def _summary(result: dict[str, Any]) -> None:
    from reprorun.cli.render import fmt_metric, table

    metric = result["metric"]
    names: list[str] = []
    for point in result["points"]:
        names += [n for n in point["params"] if n not in names]
    headers = ["POINT", *[n.upper() for n in names], "STATUS", "RUN ID"]
    if metric:
        headers.append(metric.upper())
    best = result["best"]
    rows = []
    for point in result["points"]:
        status = point["status"].upper() + (" (reused)" if point["reused"] else "")
        row = [str(point["index"]), *[point["params"].get(n, "") for n in names], status]
        row.append(point["run_id"] or "-")
        if metric:
            value = point.get("metric")
            mark = " *" if best and best["index"] == point["index"] else ""
            row.append("-" if value is None else fmt_metric(value) + mark)
        rows.append(row)
    table(headers, rows)
    counts = ", ".join(f"{n} {k}" for k, n in result["counts"].items() if n)
    click.echo(f"Sweep {result['sweep_id']}: {counts} (parent run {result['parent_run_id']})")
    if best is not None:
        click.echo(
            f"Best ({result['goal']} {metric}): point {best['index']} "
            f"{_params_text(best['params'])} run {best['run_id']} "
            f"{metric}={fmt_metric(best['value'])}"
        )
    elif metric:
        click.echo(f"Best: no finished run logged {metric}")


def _params_text(params: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


@sweep.command("status")
@click.argument("sweep_id")
@click.option("--metric", help="Metric to show and rank by [default: the sweep's --metric].")
@click.option("--goal", type=click.Choice(["max", "min"]), help="[default: the sweep's --goal]")
@json_option
@handle_errors
def status_command(sweep_id: str, metric: str | None, goal: str | None, as_json: bool) -> None:
    """Show a sweep: its points, their runs and statuses, and the best run."""
    from reprorun.cli.render import echo_json, fmt_time, key_values
    from reprorun.projects.sweep.results import sweep_status

    result = sweep_status(sweep_id, metric=metric, goal=goal)
    if as_json:
        echo_json(result)
        return
    spec, driver = result["spec"], result["driver"]
    if driver and driver["alive"]:
        running = f"running (pid {driver['pid']} on {driver['host']})"
    elif driver:
        running = f"gone (pid {driver['pid']} on {driver['host']}): reprorun sweep resume"
    else:
        running = "none" + (" (cancelled)" if result["cancelled"] else "")
    commit = result["code"].get("commit")
    key_values(
        [
            ("Sweep", result["sweep_id"]),
            ("Project", result["code"]["source_name"] + (f" @ {commit[:12]}" if commit else "")),
            ("Entry point", spec["entry_point"]),
            ("Parameters", " ".join(f"-P {p}" for p in spec["params"])),
            *(
                [("Random", f"{spec['random']} points, seed {spec['seed']}")]
                if spec["random"]
                else []
            ),
            ("Parent run", f"{result['parent_run_id']} ({result['parent_status']})"),
            ("Created", fmt_time(result["created"])),
            ("Driver", running),
        ],
        indent=0,
    )
    _summary(result)


@sweep.command("resume")
@click.argument("sweep_id")
@click.option(
    "--allow-new-code",
    is_flag=True,
    help="Run the remaining points even though the project's code changed since the sweep started.",
)
@click.option("--max-parallel", type=click.IntRange(min=1), help="[default: the sweep's]")
@handle_errors
def resume_command(sweep_id: str, allow_new_code: bool, max_parallel: int | None) -> None:
    """Run a sweep's pending points (after a crash, a reboot, Ctrl-C or --create-only)."""
    _drive(sweep_id, allow_new_code=allow_new_code, max_parallel=max_parallel)


@sweep.command("retry-failed")
@click.argument("sweep_id")
@click.option(
    "--allow-new-code", is_flag=True, help="Retry even though the project's code changed."
)
@click.option("--max-parallel", type=click.IntRange(min=1), help="[default: the sweep's]")
@handle_errors
def retry_failed_command(sweep_id: str, allow_new_code: bool, max_parallel: int | None) -> None:
    """Run a sweep's failed and killed points again (their old runs stay as attempts)."""
    from reprorun.projects.sweep.control import retry_failed
    from reprorun.projects.sweep.state import resolve_sweep_id

    sweep_id = resolve_sweep_id(sweep_id)
    count = retry_failed(sweep_id, allow_new_code=allow_new_code)
    click.echo(f"reprorun: {count} point(s) to run again", err=True)
    _drive(sweep_id, allow_new_code=allow_new_code, max_parallel=max_parallel)


@sweep.command("cancel")
@click.argument("sweep_id")
@handle_errors
def cancel_command(sweep_id: str) -> None:
    """Stop a sweep: its running points are stopped (KILLED), its pending ones cancelled."""
    from reprorun.projects.sweep.control import cancel_sweep

    result = cancel_sweep(sweep_id)
    counts = ", ".join(f"{n} {k}" for k, n in result["counts"].items() if n)
    click.echo(f"Sweep {result['sweep_id']} cancelled: {counts}")


@sweep.command("list")
@json_option
@handle_errors
def list_command(as_json: bool) -> None:
    """Every sweep, newest first."""
    from reprorun.cli.render import echo_json, fmt_time, table
    from reprorun.projects.sweep.results import list_sweeps

    found = list_sweeps()
    if as_json:
        echo_json(found)
        return
    table(
        ["SWEEP ID", "CREATED", "PROJECT", "POINTS", "DONE", "FAILED", "STATE", "PARENT RUN ID"],
        [
            [
                s["sweep_id"],
                fmt_time(s["created"]),
                s["uri"],
                str(s["total"]),
                str(s["counts"]["finished"]),
                str(s["counts"]["failed"] + s["counts"]["killed"]),
                "running"
                if s["running"]
                else "cancelled"
                if s["cancelled"]
                else "done"
                if s["counts"]["pending"] + s["counts"]["running"] == 0
                else "stopped",
                s["parent_run_id"],
            ]
            for s in found
        ],
    )
