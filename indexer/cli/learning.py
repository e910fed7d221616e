"""`learn`: update a trained model from newly indexed documents."""

from __future__ import annotations

import click

from indexer.cli.app import Context, cli, pass_context, warn


@cli.command()
@click.argument("project_id")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--wait",
    is_flag=True,
    help="If another process is training, clearing or loading it, wait for it.",
)
@pass_context
def learn(ctx: Context, project_id: str, paths: tuple[str, ...], wait: bool) -> None:
    """Update PROJECT's trained model with the documents at PATHS, without
    retraining from scratch. A backend that cannot learn online says so:
    retrain it instead."""
    project = ctx.project(project_id)
    info = project.learn(list(paths), wait=wait)
    warn(info.get("warnings", []))
    click.echo(
        f"Learned {info['documents']} documents into '{project.id}' in "
        f"{info['seconds']:.1f} s (the model now holds {info['total_documents']} "
        "documents)"
    )
