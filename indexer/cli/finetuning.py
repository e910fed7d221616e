"""`finetune-data`: a corpus as the prompts an LLM generator reads and the
answers to teach it, for fine-tuning (llm_generate)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from indexer.cli.app import Context, cli, pass_context, warn
from indexer.cli.importing import check_output, write_atomically
from indexer.errors import InputError, UsageError


@cli.command("finetune-data")
@click.argument("project_id")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="The JSONL file to write.",
)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@pass_context
def finetune_data(
    ctx: Context, project_id: str, paths: tuple[str, ...], output: str, force: bool
) -> None:
    """Write the documents of PATHS as fine-tuning data for the generator of
    PROJECT (an llm_generate project): one line per document with a subject,
    {"prompt": the text its model reads, as `suggest` renders it, "completion":
    the JSON list of the subjects' labels}. `backends.llm_generate.finetune`
    (or any prompt/completion trainer) trains on it; `adapter = DIR` loads
    the result."""
    from backends.llm_generate.finetune import examples

    project = ctx.project(project_id)
    if project.config.backend != "llm_generate":
        raise UsageError(
            f"Project '{project_id}' is a {project.config.backend} project: "
            "finetune-data writes the prompts of llm_generate projects"
        )
    target = Path(output)
    check_output(target, force)
    corpus = project.corpus(list(paths))
    lines, cut = [], 0
    for example in examples(project.backend, corpus):
        lines.append(json.dumps(example.record(), ensure_ascii=False) + "\n")
        cut += example.cut
    warn(corpus.stats.warnings())
    if not lines:
        backend = project.backend
        language = backend.labels_language(backend.params.label_language)
        raise InputError(
            f"No document of the corpus has a subject with a label in '{language}': "
            "nothing to write"
        )
    write_atomically(target, "".join(lines))
    left_out = corpus.stats.documents - len(lines)
    click.echo(
        f"Wrote {len(lines)} prompts and answers to {target}"
        + (f" ({cut} documents cut to max_doc_tokens)" if cut else "")
        + (
            f"; {left_out} documents without a labelled subject left out"
            if left_out
            else ""
        ),
        err=True,
    )
