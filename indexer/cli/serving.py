"""Commands that serve the REST API and the web demo."""

from __future__ import annotations

import re

import click

from indexer.cli.app import Context, cli, pass_context
from indexer.cli.options import at_least, together


def _host(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The address to listen on, checked before anything loads: a name that
    does not resolve or a malformed address is a usage error (exit 2)."""
    import ipaddress
    import socket

    if re.fullmatch(r"[0-9.]+", value):  # looks like IPv4: must be one
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an IPv4 address") from None
    try:
        socket.getaddrinfo(value, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise click.BadParameter(
            f"{value!r} is neither an address nor a known host name ({exc})"
        ) from None
    return value


_serve_options = together(
    click.option(
        "--host",
        default="127.0.0.1",
        show_default=True,
        callback=_host,
        help="Address to listen on (0.0.0.0: every IPv4 interface).",
    ),
    click.option(
        "--port",
        default=5000,
        show_default=True,
        type=click.IntRange(0, 65535),
        help="TCP port, 1 to 65535 (0: any free port, as the log then says).",
    ),
    click.option(
        "--api-key",
        envvar="INDEXER_API_KEY",
        help="Key (X-API-Key) for private projects and reloads [env INDEXER_API_KEY].",
    ),
    click.option(
        "--cors",
        "cors_origins",
        envvar="INDEXER_CORS_ORIGINS",
        help="Origins allowed to call the API from browsers: '*' or a "
        "comma-separated list [env INDEXER_CORS_ORIGINS].",
    ),
    at_least(
        1,
        "--max-content-length",
        default=5 * 1024 * 1024,
        help_text="Largest request body in bytes.",
    ),
    at_least(
        1,
        "--max-batch",
        default=32,
        help_text="Most documents per suggest-batch request.",
    ),
    at_least(
        0.0,
        "--check-interval",
        default=2.0,
        help_text="Seconds between checks for a retrained model (0: never).",
    ),
    click.option(
        "--preload/--no-preload",
        default=True,
        show_default=True,
        help="Load every model at start rather than on first use (one process "
        "answers meanwhile: /v1/ready says when it is done).",
    ),
    click.option(
        "--metrics",
        type=click.Choice(["public", "key", "off"]),
        default="key",
        show_default=True,
        help="/metrics (Prometheus): for anyone, only with the API key "
        "(X-API-Key), or not at all.",
    ),
    click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="json: one JSON object a line, with a line per request.",
    ),
)


@cli.command()
@_serve_options
@at_least(
    1,
    "--threads",
    default=4,
    help_text="Worker threads (they share the loaded models).",
)
@at_least(
    1,
    "--workers",
    default=1,
    help_text="Processes (use more cores): gunicorn loads the models once "
    "before it forks them.",
)
@click.option(
    "--server",
    type=click.Choice(["auto", "waitress", "gunicorn"]),
    default="auto",
    show_default=True,
    help="auto: waitress for one process, gunicorn for several.",
)
@click.option("--dev", is_flag=True, help="Flask's development server instead.")
@pass_context
def serve(ctx: Context, **settings) -> None:
    """Serve the REST API (/v1) and the web demo (/): waitress in one
    process, gunicorn with --workers N."""
    from indexer.rest import run

    run(ctx.projects, **settings)


@cli.command("run-dev")
@_serve_options
@pass_context
def run_dev(ctx: Context, **settings) -> None:
    """Serve with Flask's development server (same as `serve --dev`)."""
    from indexer.rest import run

    run(ctx.projects, dev=True, **settings)


@cli.command("decision-config")
@click.argument("project_id")
@pass_context
def decision_config(ctx: Context, project_id: str) -> None:
    """Print the System One decision config (JSON) that makes a served model
    read the prompt of PROJECT (an llm_rank project) as the local model does:
    `transformers serve MODEL --decision-config FILE`."""
    import json

    from indexer.errors import UsageError

    project = ctx.project(project_id)
    if project.config.backend != "llm_rank":
        raise UsageError(
            f"Project '{project_id}' is a {project.config.backend} project: only "
            "llm_rank asks yes/no questions"
        )
    click.echo(json.dumps(project.backend.decision_config(), indent=2))
