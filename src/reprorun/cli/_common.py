"""What every command module shares: the ``reprorun`` group the commands register on, the
application object it builds (``current_app``), the edge where reprorun's errors become
click's, and the common options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from reprorun import __version__

if TYPE_CHECKING:
    from reprorun.app import Reprorun

F = TypeVar("F", bound=Callable[..., Any])


class InputError(click.ClickException):
    """Bad input: exit status 2 like click's usage errors, without the usage noise."""

    exit_code = 2


def handle_errors(fn: F) -> F:
    """Turn reprorun's errors into click errors at the edge (the only place that prints)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from reprorun.errors import ReprorunError, ResourceNotFound, UserInputError

        try:
            return fn(*args, **kwargs)
        except (UserInputError, ResourceNotFound) as exc:
            raise InputError(str(exc)) from exc
        except ReprorunError as exc:
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            # Ctrl-C before a run exists (e.g. while an environment builds): nothing recorded.
            click.echo("reprorun: interrupted; no run was recorded", err=True)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]


tracking_uri_option = click.option(
    "--tracking-uri",
    envvar="REPRORUN_TRACKING_URI",
    help="Store to record in: a SQLAlchemy URL or a SQLite file path "
    "[env: REPRORUN_TRACKING_URI; default: ~/.reprorun/store.db].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reprorun")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run MLproject projects reproducibly and track every run."""
    # One application per invocation; it opens a store only when a command asks for one
    # (imported here: `reprorun --help` needs no settings).
    from reprorun.app import Reprorun

    if not isinstance(ctx.obj, Reprorun):
        ctx.obj = Reprorun()


def current_app() -> Reprorun:
    """The application the ``reprorun`` group built for this invocation (a command invoked
    on its own, outside the group, gets a new one)."""
    from reprorun.app import Reprorun

    ctx = click.get_current_context()
    found = ctx.find_object(Reprorun)
    if found is None:
        found = ctx.ensure_object(Reprorun)
    return found


def _retry_classes(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    from reprorun.errors import UserInputError
    from reprorun.projects.retry import parse_retry_on

    try:
        return None if value is None else tuple(r.value for r in parse_retry_on(value))
    except UserInputError as exc:
        raise click.BadParameter(str(exc)) from exc


def _memory_factor(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    from reprorun.errors import UserInputError
    from reprorun.projects.retry import parse_memory_factor

    try:
        return parse_memory_factor(value)
    except UserInputError as exc:
        raise click.BadParameter(str(exc)) from exc


def retry_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--retries, --retry-on, --retry-memory, --retry-backoff (reprorun run and sweep)."""
    options = [
        click.option(
            "--retries",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            metavar="N",
            help="Run an attempt that ended for a --retry-on class again, up to N times; each "
            "attempt is a run of its own, linked to the first.",
        ),
        click.option(
            "--retry-on",
            callback=_retry_classes,
            metavar="CLASSES",
            help="With --retries: the exit reasons retried, comma-separated, among preempted, "
            "node-lost, out-of-memory, timeout, launch-error, code-error "
            "[default: preempted,node-lost,launch-error].",
        ),
        click.option(
            "--retry-memory",
            callback=_memory_factor,
            metavar="xF",
            help="With --retries: an out-of-memory retry multiplies the backend's memory "
            "request (Slurm mem, Ray memory, the Kubernetes template's memory, a docker_env "
            "run's --docker-args memory) by F, e.g. x2.",
        ),
        click.option(
            "--retry-backoff",
            type=click.FloatRange(min=0),
            metavar="SECONDS",
            help="With --retries: the wait before the first retry, doubled for each next one "
            "and capped at 10 minutes [default: 10].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def duration_option(value: str | None) -> float | None:
    """--timeout's seconds (a bad duration is a usage error naming the option)."""
    if value is None:
        return None
    from reprorun.errors import UserInputError
    from reprorun.projects.request import parse_duration

    try:
        return parse_duration(value)
    except UserInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from exc
