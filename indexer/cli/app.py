"""The command group, its shared context, error handling and output helpers."""

from __future__ import annotations

import sys

import click

from indexer import __version__
from indexer.errors import IndexerError


class Context:
    """What every command gets: the projects, read on first use."""

    def __init__(self, projects_path):
        self.projects_path = projects_path
        self._projects = None

    @property
    def projects(self):
        if self._projects is None:
            from indexer.project import Projects

            self._projects = Projects.from_path(self.projects_path)
        return self._projects

    def project(self, project_id: str):
        return self.projects.get(project_id)


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="indexer")
@click.option(
    "--projects",
    "projects_path",
    type=click.Path(),
    envvar="INDEXER_PROJECTS",
    help="projects.cfg file or directory (default: ./projects.cfg, ./projects.d/).",
)
@click.pass_context
def cli(ctx: click.Context, projects_path: str | None) -> None:
    """Automated subject indexing with controlled vocabularies."""
    from indexer.locking import name_command

    ctx.obj = Context(projects_path)
    # lock files name the subcommand, never its arguments (they may be keys)
    name_command(f"indexer {ctx.invoked_subcommand}")
    ctx.call_on_close(lambda: name_command(None))


INTERRUPTED = (
    "Interrupted: models and vocabularies are replaced only when complete; "
    "those saved before are unchanged."
)


def main() -> None:
    """Console entry point: errors become one line on stderr and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except IndexerError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:  # click's name for Ctrl-C, or EOF
        interrupted = isinstance(exc.__context__, KeyboardInterrupt)
        click.echo(INTERRUPTED if interrupted else "Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # outside a command
        click.echo(INTERRUPTED, err=True)
        sys.exit(130)


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        click.echo(
            "  ".join(
                str(x).ljust(w) for x, w in zip(row, widths, strict=True)
            ).rstrip()
        )


def warn(lines) -> None:
    for line in lines:
        click.echo(f"Warning: {line}", err=True)
