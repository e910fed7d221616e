"""Commands that serve the REST API and the web demo."""

from __future__ import annotations

import click

from indexer.cli.app import Context, cli, pass_context


def _serve_options(function):
    options = [
        click.option("--host", default="127.0.0.1", show_default=True),
        click.option("--port", default=5000, show_default=True, type=int),
        click.option(
            "--api-key",
            envvar="INDEXER_API_KEY",
            help="Key (X-API-Key) for private projects and reloads "
            "[env INDEXER_API_KEY].",
        ),
        click.option(
            "--cors",
            "cors_origins",
            envvar="INDEXER_CORS_ORIGINS",
            help="Origins allowed to call the API from browsers: '*' or a "
            "comma-separated list [env INDEXER_CORS_ORIGINS].",
        ),
        click.option(
            "--max-content-length",
            default=5 * 1024 * 1024,
            show_default=True,
            type=click.IntRange(min=1),
            help="Largest request body in bytes.",
        ),
        click.option(
            "--max-batch",
            default=32,
            show_default=True,
            type=click.IntRange(min=1),
            help="Most documents per suggest-batch request.",
        ),
        click.option(
            "--check-interval",
            default=2.0,
            show_default=True,
            type=click.FloatRange(min=0),
            help="Seconds between checks for a retrained model (0: never).",
        ),
        click.option(
            "--preload/--no-preload",
            default=True,
            show_default=True,
            help="Load every model at start rather than on first use.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@cli.command()
@_serve_options
@click.option(
    "--threads",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker threads (they share the loaded models).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Processes, each with its own models (use more cores).",
)
@click.option("--dev", is_flag=True, help="Flask's development server instead.")
@pass_context
def serve(ctx: Context, **settings) -> None:
    """Serve the REST API (/v1) and the web demo (/) with waitress."""
    from indexer.rest import run

    run(ctx.projects, **settings)


@cli.command("run-dev")
@_serve_options
@pass_context
def run_dev(ctx: Context, **settings) -> None:
    """Serve with Flask's development server (same as `serve --dev`)."""
    from indexer.rest import run

    run(ctx.projects, dev=True, **settings)
