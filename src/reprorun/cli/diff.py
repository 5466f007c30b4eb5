"""``reprorun runs diff``: how two runs differ, section by section."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from reprorun.cli._common import current_app, handle_errors, json_option, tracking_uri_option
from reprorun.cli.runs import runs

MAX_FILES_SHOWN = 50  # the text report lists at most this many changed files (JSON has all)


@runs.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@tracking_uri_option
@json_option
@handle_errors
def diff_runs_command(run_a: str, run_b: str, tracking_uri: str | None, as_json: bool) -> None:
    """Show how RUN_B differs from RUN_A: parameters, code (commits between them and changed
    files), environment packages, data, backend, metrics and fingerprint.

    Run ids may be shortened to any unique prefix of at least 4 characters.
    """
    from reprorun.cli.render import echo_json
    from reprorun.projects.diff import diff_runs

    report = diff_runs(current_app().store_at(tracking_uri), run_a, run_b)
    if as_json:
        echo_json(report)
        return
    render_report(report)


def render_report(report: dict[str, Any]) -> None:
    _runs(report["runs"])
    _params(report["params"])
    _code(report["code"])
    _environment(report["environment"])
    _data(report["data"])
    _backend(report["backend"])
    _metrics(report["metrics"])
    _fingerprint(report["fingerprint"])


# helpers --------------------------------------------------------------------------------------


def _heading(title: str, summary: str | None = None) -> None:
    """A section title; with a summary, the whole section in one line."""
    text = click.style(title, bold=True)
    click.echo(f"{text}: {summary}" if summary is not None else text)


def _rows(rows: Sequence[Sequence[str]], indent: int = 2) -> None:
    """Lines of columns, each column as wide as its widest cell (the last one unpadded)."""
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows if len(r) > i) for i in range(max(map(len, rows)))]
    for row in rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        click.echo((" " * indent + "  ".join(cells)).rstrip())


def _arrow(a: Any, b: Any) -> str:
    return f"{_text(a)} -> {_text(b)}"


def _text(value: Any) -> str:
    return "(none)" if value is None or value == "" else str(value)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# sections ------------------------------------------------------------------------------------


def _runs(runs: dict[str, Any]) -> None:
    from reprorun.cli.render import fmt_time

    _rows(
        [
            [
                click.style(f"Run {side.upper()}", bold=True),
                r["run_id"],
                r["run_name"] or "-",
                r["status"],
                fmt_time(r["start_time"]),
            ]
            for side, r in runs.items()
        ],
        indent=0,
    )


def _params(params: dict[str, Any]) -> None:
    if params["same"]:
        _heading("Parameters", f"same ({params['unchanged']})" if params["unchanged"] else "none")
        return
    _heading("Parameters")
    rows = [["changed", k, _arrow(v["a"], v["b"])] for k, v in params["changed"].items()]
    rows += [["added", k, v] for k, v in params["added"].items()]
    rows += [["removed", k, v] for k, v in params["removed"].items()]
    _rows(rows)
    if params["unchanged"]:
        click.echo(f"  ({params['unchanged']} the same)")


def _commit_text(side: dict[str, Any]) -> str:
    if not side["commit"]:
        return "no git commit recorded" + (f" ({side['source']})" if side["source"] else "")
    text = str(side["commit"])[:12]
    if side["branch"]:
        text += f" ({side['branch']})"
    if side["dirty"]:
        text += " with uncommitted changes"
        if side["uncommitted_diff"]:
            text += f" (artifact {side['uncommitted_diff']})"
    elif side["dirty"] is False:
        text += " clean"
    return text


def _code(code: dict[str, Any]) -> None:
    a, b = code["a"], code["b"]
    if code["same_commit"] and not a["dirty"] and not b["dirty"]:
        _heading("Code", f"same commit {_commit_text(a)}")
        return
    if not a["commit"] and not b["commit"]:
        _heading("Code", "no git commit recorded for either run")
        return
    _heading("Code")
    _rows([["A", _commit_text(a)], ["B", _commit_text(b)]])
    if code["same_commit"]:
        dirty = " and ".join(n for n, side in (("A", a), ("B", b)) if side["dirty"])
        click.echo(f"  same commit; run {dirty} had uncommitted changes")
        return
    if code["range"] is None:
        click.echo(f"  commit range unavailable: {code['range_unavailable']}")
        return
    span = code["range"]
    forward, backward = span["commits_a_to_b"], span["commits_b_to_a"]
    back = "only in A (the histories diverged)" if forward else "from B to A (B is older)"
    for count, log, where in (
        (forward, span["log_a_to_b"], "from A to B"),
        (backward, span["log_b_to_a"], back),
    ):
        if not count:
            continue
        shown = f", the newest {len(log)}" if count > len(log) else ""
        click.echo(f"  {_count(count, 'commit')} {where}{shown}:")
        _rows([[e["commit"][:12], e["subject"]] for e in log], indent=4)
    files = span["files"]
    if not files:
        click.echo("  no file changes between the commits")
    else:
        click.echo(
            f"  {_count(len(files), 'file')} changed, {_count(span['insertions'], 'insertion')}"
            f"(+), {_count(span['deletions'], 'deletion')}(-):"
        )
        rows = [
            [f["path"], "binary" if f["added"] is None else f"+{f['added']} -{f['deleted']}"]
            for f in files[:MAX_FILES_SHOWN]
        ]
        _rows(rows, indent=4)
        if len(files) > MAX_FILES_SHOWN:
            click.echo(f"    ... and {len(files) - MAX_FILES_SHOWN} more (--json lists all)")
    if a["dirty"] or b["dirty"]:
        click.echo("  (uncommitted changes are not part of the file list)")


def _environment(env: dict[str, Any]) -> None:
    a, b = env["a"], env["b"]
    packages = env["packages"]
    if env["same"]:
        described = ", ".join(
            filter(None, [a["manager"], a["python"] and f"python {a['python']}", a["image"]])
        )
        n = "" if packages is None else f", {_count(packages['unchanged'], 'package')}"
        _heading("Environment", f"same ({described or 'nothing recorded'}{n})")
        if env["packages_unavailable"]:
            click.echo(f"  packages not compared: {env['packages_unavailable']}")
        return
    _heading("Environment")
    labels = {"manager": "manager", "python": "python", "image": "image", "hash": "env hash"}
    rows = [
        [label, _text(a[k]) if a[k] == b[k] else _arrow(a[k], b[k])]
        for k, label in labels.items()
        if a[k] is not None or b[k] is not None
    ]
    if a["lock_header"] != b["lock_header"] and a["lock_header"] and b["lock_header"]:
        rows.append(["lock", _arrow(a["lock_header"], b["lock_header"])])
    _rows(rows)
    if packages is None:
        click.echo(f"  packages not compared: {env['packages_unavailable']}")
        return
    if packages["same"]:
        click.echo(f"  packages: same ({packages['unchanged']})")
        return
    click.echo(
        f"  packages: {len(packages['added'])} added, {len(packages['removed'])} removed, "
        f"{len(packages['changed'])} changed, {packages['unchanged']} the same"
    )
    rows = [["changed", k, _arrow(v["a"], v["b"])] for k, v in packages["changed"].items()]
    rows += [["added", k, v] for k, v in packages["added"].items()]
    rows += [["removed", k, v] for k, v in packages["removed"].items()]
    _rows(rows, indent=4)


def _data(data: dict[str, Any]) -> None:
    if not data["recorded"]:
        _heading("Data", data["not_recorded"])
        return
    params = data["params"]
    if not params:
        _heading("Data", "no path parameters")
        return
    if data["same"]:
        _heading("Data", f"same ({', '.join(params)})")
        return
    _heading("Data")
    words = {"same": "same", "changed": "changed", "only_a": "only in A", "only_b": "only in B"}
    _rows([[name, words[p["status"]]] for name, p in params.items()])


def _backend(backend: dict[str, Any]) -> None:
    if backend["same"]:
        _heading("Backend", _text(backend["a"]))
    else:
        _heading("Backend", _arrow(backend["a"], backend["b"]))


def _metrics(metrics: dict[str, Any]) -> None:
    from reprorun.cli.render import fmt_metric

    unchanged = metrics["unchanged"]
    if metrics["same"]:
        _heading("Metrics", f"same ({', '.join(unchanged)})" if unchanged else "none")
        return
    _heading("Metrics")
    rows = []
    for key, m in metrics["changed"].items():
        change = f"{m['delta']:+.6g}"
        if m["relative"] is not None:
            change += f" ({m['relative']:+.2%})"
        rows.append([key, f"{fmt_metric(m['a'])} -> {fmt_metric(m['b'])}", change])
    rows += [[k, f"only in A: {fmt_metric(v)}", ""] for k, v in metrics["only_a"].items()]
    rows += [[k, f"only in B: {fmt_metric(v)}", ""] for k, v in metrics["only_b"].items()]
    _rows(rows)
    if unchanged:
        click.echo(f"  ({len(unchanged)} the same: {', '.join(unchanged)})")


def _fingerprint(fp: dict[str, Any]) -> None:
    if not fp["recorded"]:
        _heading("Fingerprint", "not recorded")
        return
    if fp["same"]:
        _heading("Fingerprint", f"same ({fp['a'][:12]})")
        return
    differ = [name.replace("_", " ") for name, part in fp["parts"].items() if not part["same"]]
    detail = f"; differs in: {', '.join(differ)}" if differ else ""
    _heading("Fingerprint", f"{fp['a'][:12]} -> {fp['b'][:12]}{detail}")
