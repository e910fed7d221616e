"""Commands that train on corpora and suggest subjects for documents."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from indexer.cli.app import Context, cli, pass_context, warn
from indexer.errors import UsageError


@cli.command()
@click.argument("project_id")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "-j",
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Parallel jobs.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="If another process is training, clearing or loading it, wait for it.",
)
@pass_context
def train(
    ctx: Context, project_id: str, paths: tuple[str, ...], jobs: int, wait: bool
) -> None:
    """Train PROJECT on the corpus at PATHS (TSV, CSV, JSONL or a directory)."""
    project = ctx.project(project_id)
    info = project.train(list(paths), jobs=jobs, wait=wait)
    warn(info.get("warnings", []))
    click.echo(
        f"Trained '{project.id}' on {info['documents']} documents in "
        f"{info['seconds']:.1f} s"
    )


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


@cli.command()
@click.argument("project_id")
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--limit", type=click.IntRange(min=1), help="Most subjects per document.")
@click.option("--threshold", type=click.FloatRange(0, 1), help="Lowest score shown.")
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
    from indexer.rendering import render_suggestions

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
            click.echo(_tsv_line(item))
            if explain and item.get("explanation"):
                click.echo(f"#\t{json.dumps(item['explanation'], ensure_ascii=False)}")


@cli.command()
@click.argument("project_id")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="Write one JSONL file instead of a file per document.",
)
@click.option(
    "--suffix",
    default=".suggestions.tsv",
    show_default=True,
    help="Suffix of per-document files.",
)
@click.option("--force", is_flag=True, help="Overwrite existing suggestion files.")
@click.option("--limit", type=click.IntRange(min=1))
@click.option("--threshold", type=click.FloatRange(0, 1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@pass_context
def index(
    ctx: Context,
    project_id,
    directory,
    output,
    suffix,
    force,
    limit,
    threshold,
    batch_size,
) -> None:
    """Suggest subjects for every .txt file in DIRECTORY."""
    from tqdm import tqdm

    from indexer.corpus import batched
    from indexer.rendering import render_suggestions

    project = ctx.project(project_id)
    files = sorted(Path(directory).glob("*.txt"))
    if not files:
        raise UsageError(f"Directory '{directory}' contains no .txt files")
    chunks = list(batched(files, batch_size))
    with _IndexOutput(output, suffix, force) as sink:
        for chunk in tqdm(chunks, desc="Indexing", unit=" batches", disable=None):
            texts = [f.read_text(encoding="utf-8", errors="replace") for f in chunk]
            batch = project.suggest(texts, limit=limit, threshold=threshold)
            rendered = render_suggestions(project, texts, batch, project.language)
            for path, items in zip(chunk, rendered, strict=True):
                sink.write(path, items)
    click.echo(sink.summary(), err=True)


def _tsv_line(item: dict) -> str:
    return f"<{item['uri']}>\t{item['label']}\t{item['score']:.4f}"


class _IndexOutput:
    """Where `index` writes: one JSONL file, or a TSV file beside each document
    (an existing one is kept unless forced)."""

    def __init__(self, output: str | None, suffix: str, force: bool):
        self.output, self.suffix, self.force = output, suffix, force
        self.written = self.skipped = 0
        self._file = None

    def __enter__(self) -> _IndexOutput:
        if self.output:
            self._file = open(self.output, "w", encoding="utf-8")  # noqa: SIM115
        return self

    def __exit__(self, *exc) -> None:
        if self._file:
            self._file.close()

    def write(self, path: Path, items: list[dict]) -> None:
        if self._file:
            record = {"id": path.stem, "suggestions": items}
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            target = path.with_name(path.stem + self.suffix)
            if target.exists() and not self.force:
                self.skipped += 1
                return
            target.write_text(
                "".join(_tsv_line(item) + "\n" for item in items), encoding="utf-8"
            )
        self.written += 1

    def summary(self) -> str:
        kept = f"; {self.skipped} existing files kept (use --force)"
        return f"Wrote suggestions for {self.written} documents" + (
            kept if self.skipped else ""
        )
