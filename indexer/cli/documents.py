"""Commands that train on corpora and suggest subjects for documents."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from indexer.cli.app import Context, cli, pass_context, warn
from indexer.cli.options import at_least, limit_option, threshold_option, together
from indexer.errors import UsageError


def engine_option(help_text: str):
    return click.option(
        "--engine",
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help=help_text,
    )


def jobs_option(help_text: str):
    return at_least(1, "-j", "--jobs", default=1, help_text=help_text)


ray_options = together(  # for --engine ray
    click.option("--address", help="Ray cluster to join (default: start one)."),
    at_least(
        1,
        "--workers",
        default=1,
        help_text="Ray actors, each loading the project once, or with --cross-fit "
        "the trainings run at once (--engine ray).",
    ),
    at_least(
        0.0,
        "--gpus-per-worker",
        default=0.0,
        help_text="GPUs for each Ray actor (LLM backends).",
    ),
)


@cli.command()
@click.argument("project_id")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@at_least(
    1,
    "-j",
    "--jobs",
    help_text="Parallel jobs: threads or worker processes where a backend can "
    "split its training (default: the cores available; with --engine ray, 1 "
    "for each task).",
)
@engine_option(
    "Where the encoding passes run (knn, embed, llm_rank, llm_head), or, with "
    "--cross-fit, every training of the sources (a Ray task each)."
)
@ray_options
@click.option(
    "--wait",
    is_flag=True,
    help="If another process is training, clearing or loading it, wait for it.",
)
@click.option(
    "--cross-fit",
    "cross_fit",
    type=click.IntRange(min=2),
    default=None,
    metavar="K",
    help="A calibrated fusion: train its sources on K folds of PATHS and fit on "
    "every document scored by sources that did not see it, then train the "
    "sources on all of PATHS (K = 5 is usual).",
)
@pass_context
def train(
    ctx: Context,
    project_id: str,
    paths: tuple[str, ...],
    jobs: int | None,
    wait: bool,
    cross_fit: int | None,
    **engine,
) -> None:
    """Train PROJECT on the corpus at PATHS (TSV, CSV, JSONL or a directory).

    Under `torchrun --nproc-per-node N -m indexer train ...`, llm_head trains
    its LoRA modes on N processes (DistributedDataParallel).
    """
    from indexer import distributed
    from indexer.parallel import available_cores

    project = ctx.project(project_id)
    if jobs is None:
        jobs = 1 if engine["engine"] == "ray" else available_cores()
    if cross_fit is not None:
        if project.config.backend != "calibrated":
            raise UsageError(
                f"--cross-fit fits a calibrated fusion; project '{project_id}' is "
                f"a {project.config.backend} project"
            )
        project.config.params["cross_fit"] = cross_fit
        project.unload()
    world = distributed.join_from_environment()
    try:
        if world.active and not project.backend_class.trains_distributed:
            raise UsageError(
                f"Backend '{project.config.backend}' trains in one process: run "
                "`indexer train` without torchrun"
            )
        with _training_on(ctx, project, engine):
            info = project.train(list(paths), jobs=jobs, wait=wait)
    finally:
        distributed.leave()
    if not world.is_main:
        return
    warn(info.get("warnings", []))
    click.echo(
        f"Trained '{project.id}' on {info['documents']} documents in "
        f"{info['seconds']:.1f} s"
        + (f" on {world.size} processes" if world.active else "")
    )


@contextmanager
def _training_on(ctx: Context, project, engine: dict):
    """With --engine ray, the trainings of a cross-fit run on Ray (a task
    each), or else the encoding passes of the training."""
    if engine["engine"] != "ray":
        yield
        return
    if project.config.backend == "calibrated" and project.backend.params.cross_fit:
        with _cross_fit_on(ctx, project, engine):
            yield
        return
    from indexer.batch.ray_encoding import RayEncoding
    from indexer.batch.records import RayOptions
    from indexer.batch.work import ProjectRef
    from indexer.neural.encoder import encoding_engine

    settings = RayOptions(
        engine["address"], engine["workers"], engine["gpus_per_worker"]
    )
    ref = ProjectRef.of(project, ctx.projects_path)
    with RayEncoding(ref, settings) as ray_engine, encoding_engine(ray_engine):
        yield
    click.echo(f"{ray_engine.encoded} texts encoded on the Ray cluster", err=True)


@contextmanager
def _cross_fit_on(ctx: Context, project, engine: dict):
    from backends.fusion_crossfit import cross_fit_engine
    from backends.fusion_ray import RayCrossFit
    from indexer.batch.records import RayOptions
    from indexer.batch.work import ProjectRef

    settings = RayOptions(
        engine["address"], engine["workers"], engine["gpus_per_worker"]
    )
    ref = ProjectRef.of(project, ctx.projects_path)
    with RayCrossFit(ref, settings) as ray_engine, cross_fit_engine(ray_engine):
        yield
    click.echo(f"{ray_engine.trained} trainings ran on the Ray cluster", err=True)


def _read_inputs(files: tuple[str, ...]) -> list[tuple[str, str]]:
    from indexer.corpus import decode_document

    if not files:
        return [
            ("stdin", decode_document(sys.stdin.buffer.read(), "The input on stdin"))
        ]
    out = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"File '{name}' does not exist")
        out.append((name, decode_document(path.read_bytes(), f"File '{name}'")))
    return out


def _fields_of(dataclass_type, settings: dict) -> dict:
    """The command-line settings that are fields of `dataclass_type`."""
    from dataclasses import fields

    names = {f.name for f in fields(dataclass_type)}
    return {name: value for name, value in settings.items() if name in names}


@cli.command()
@click.argument("project_id")
@click.argument("files", nargs=-1, type=click.Path())
@limit_option()
@threshold_option()
@click.option(
    "--language", help="Language of the labels shown (default: the project's)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tsv", "json"]),
    default="tsv",
    show_default=True,
)
@click.option("--explain", is_flag=True, help="Show why each subject was suggested.")
@pass_context
def suggest(
    ctx: Context, project_id: str, files, limit, threshold, language, fmt, explain
) -> None:
    """Suggest subjects for FILES (or the text on stdin).

    Output: `<uri>TAB label TAB score` per line, or --format json.
    """
    from indexer.rendering import render_suggestions, tsv_line

    project = ctx.project(project_id)
    vocab = project.vocab
    lang = vocab.check_label_language(language) if language else project.language
    inputs = _read_inputs(files)
    texts = [text for _, text in inputs]
    batch = project.suggest(texts, limit=limit, threshold=threshold)
    rendered = render_suggestions(project, texts, batch, lang, explain)
    results = [
        {"document": name, "suggestions": items}
        for (name, _), items in zip(inputs, rendered, strict=True)
    ]
    if fmt == "json":
        click.echo(
            json.dumps(
                results if len(results) > 1 else results[0],
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    for result in results:
        if len(results) > 1:
            click.echo(f"# {result['document']}")
        for item in result["suggestions"]:
            click.echo(tsv_line(item["uri"], item["label"], item["score"]))
            if explain and item.get("explanation"):
                click.echo(f"#\t{json.dumps(item['explanation'], ensure_ascii=False)}")


@cli.command()
@click.argument("project_id")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="OUT.jsonl or OUT.parquet: rows id, rank, uri, label, score. Without it, "
    "a file per document is written beside each document of one directory.",
)
@engine_option("Worker processes on this machine, or a Ray cluster.")
@jobs_option("Worker processes (--engine local).")
@ray_options
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="On a record without valid UTF-8 text: stop, or write it to a rejects "
    "file and go on.",
)
@click.option("--id-column", default="id", show_default=True, help="JSONL/Parquet.")
@click.option("--text-column", default="text", show_default=True, help="JSONL/Parquet.")
@at_least(
    1,
    "--block-size",
    default=1000,
    help_text="Documents per output block (the unit of work and of resuming).",
)
@click.option(
    "--suffix",
    default=".suggestions.tsv",
    show_default=True,
    help="Suffix of per-document files.",
)
@click.option(
    "--force", is_flag=True, help="Overwrite the output (or per-document files)."
)
@click.option(
    "--wait", is_flag=True, help="If another run writes the same output, wait for it."
)
@limit_option()
@threshold_option()
@click.option("--language", help="Language of the labels (default: the project's).")
@at_least(1, "--batch-size", default=32)
@pass_context
def index(ctx: Context, project_id, inputs, output, **settings) -> None:
    """Suggest subjects for every document of INPUTS.

    INPUTS: directories of .txt files, JSONL (id, text), Parquet or Annif TSV
    files. A rerun of an interrupted run resumes it.

    An id is a string or an integer (Parquet binary ids: UTF-8); a record
    without one is named by its place (docs.jsonl:7), and one whose id is a
    boolean, a fraction or a list is rejected. Per-document files never take
    the suffix of a corpus's subject files (.tsv, .key).
    """
    from indexer.batch.records import Options, RayOptions
    from indexer.batch.runner import BatchJob, IndexingInterrupted, run
    from indexer.batch.work import ProjectRef

    project = ctx.project(project_id)
    options, ray = _fields_of(Options, settings), _fields_of(RayOptions, settings)
    job = BatchJob(
        project,
        ProjectRef.of(project, ctx.projects_path),
        [Path(p) for p in inputs],
        Path(output) if output else None,
        Options(**options),
        ray=RayOptions(**ray),
        **{k: v for k, v in settings.items() if k not in options and k not in ray},
    )
    try:
        summary = run(job)
    except KeyboardInterrupt:
        raise IndexingInterrupted(
            "Interrupted: the blocks finished are kept; rerun the same command to "
            "resume"
        ) from None
    if summary.duplicates:
        warn(
            [
                f"{summary.duplicates} records have the id of an earlier record: "
                "each id is indexed once, the later records are in the rejects"
            ]
        )
    click.echo(
        f"Indexed {summary.documents} documents in {summary.seconds:.1f} s"
        + (
            f" ({summary.resumed_blocks} blocks done before were kept)"
            if summary.resumed_blocks
            else ""
        )
        + (
            f"; {summary.rejected} rejected records in {summary.rejects_file}"
            if summary.rejected
            else ""
        ),
        err=True,
    )
