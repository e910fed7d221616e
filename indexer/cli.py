"""The `indexer` command: parse arguments, call a Project, print results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from indexer import __version__
from indexer.errors import IndexerError, UsageError


class _Context:
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


pass_context = click.make_pass_decorator(_Context)


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
    ctx.obj = _Context(projects_path)


def main() -> None:
    """Console entry point: errors become one line on stderr and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except IndexerError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted: the previous model (if any) is unchanged.", err=True)
        sys.exit(130)


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        click.echo(
            "  ".join(
                str(x).ljust(w) for x, w in zip(row, widths, strict=True)
            ).rstrip()
        )


def _warn(lines) -> None:
    for line in lines:
        click.echo(f"Warning: {line}", err=True)


# -- projects and vocabularies ----------------------------------------------


@cli.command("list-projects")
@pass_context
def list_projects(ctx: _Context) -> None:
    """List the configured projects."""
    rows = []
    for project in ctx.projects:
        config = project.config
        try:
            status = "ready" if project.is_ready else "not trained"
            kind = project.kind
        except IndexerError as exc:
            status, kind = f"error: {exc.message[:40]}", "?"
        rows.append(
            [
                config.id,
                config.name,
                config.backend,
                kind,
                config.language,
                config.vocab,
                status,
            ]
        )
    _table(rows, ["id", "name", "backend", "kind", "language", "vocab", "status"])


@cli.command("show-project")
@click.argument("project_id")
@pass_context
def show_project(ctx: _Context, project_id: str) -> None:
    """Show a project's settings, parameters and model."""
    import dataclasses

    project = ctx.project(project_id)
    backend = project.backend
    manifest = backend.manifest
    click.echo(f"Project ID:   {project.id}")
    click.echo(f"Name:         {project.name}")
    click.echo(f"Language:     {project.language}")
    click.echo(f"Vocabulary:   {project.config.vocab}")
    click.echo(f"Backend:      {project.config.backend} ({project.kind})")
    click.echo(f"Limit:        {project.limit}   Threshold: {project.threshold}")
    click.echo(f"Access:       {project.access}")
    click.echo(
        f"Trained:      {'yes, ' + manifest['trained_at'] if manifest else 'no'}"
    )
    if manifest:
        click.echo(
            f"  documents:  {manifest['documents']}, subjects seen: "
            f"{manifest['subjects_seen']}"
        )
    click.echo("Parameters:")
    for key, value in dataclasses.asdict(backend.params).items():
        click.echo(f"  {key} = {value}")


@cli.command("list-vocabs")
@pass_context
def list_vocabs(ctx: _Context) -> None:
    """List vocabularies (loaded or configured)."""
    rows = []
    for vocab_id in ctx.projects.vocab_ids():
        vocab = ctx.projects.vocab(vocab_id, autoload=False)
        if vocab.exists:
            rows.append(
                [
                    vocab_id,
                    str(len(vocab)),
                    ",".join(vocab.languages),
                    vocab.info["loaded_at"],
                ]
            )
        else:
            rows.append([vocab_id, "-", "-", "not loaded"])
    _table(rows, ["id", "concepts", "languages", "loaded"])


@cli.command("load-vocab")
@click.argument("vocab_id")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--language", help="Label language of a TSV file without a header.")
@pass_context
def load_vocab(
    ctx: _Context, vocab_id: str, file: str | None, language: str | None
) -> None:
    """Load a vocabulary from FILE (SKOS: .ttl .rdf .nt ...; or .tsv/.csv).

    Reloading keeps the ids of known concepts, so trained models stay valid.
    """
    source = ctx.projects.config.vocabs.get(vocab_id)
    if file is None:
        if source is None or source.source is None:
            raise UsageError(
                f"Give the vocabulary FILE (no [vocab:{vocab_id}] source is configured)"
            )
        file = source.source
        language = language or source.language
    vocab = ctx.projects.vocab(vocab_id, autoload=False)
    click.echo(f"Parsing {file} ...", err=True)
    info = vocab.load_file(Path(file), language)
    click.echo(
        f"Loaded vocabulary '{vocab_id}': {info['concepts']} concepts "
        f"({info['added']} new, {info['removed']} no longer in the source and kept as "
        "deprecated), "
        f"languages {', '.join(info['languages'])}, in {info['seconds']} s"
    )


# -- training and suggesting --------------------------------------------------


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
@pass_context
def train(ctx: _Context, project_id: str, paths: tuple[str, ...], jobs: int) -> None:
    """Train PROJECT on the corpus at PATHS (TSV, CSV, JSONL or a directory)."""
    project = ctx.project(project_id)
    info = project.train(list(paths), jobs=jobs)
    _warn(info.get("warnings", []))
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
    ctx: _Context, project_id: str, files, limit, threshold, language, fmt, explain
) -> None:
    """Suggest subjects for FILES (or the text on stdin).

    Output: `<uri>TAB label TAB score` per line, or --format json.
    """
    project = ctx.project(project_id)
    inputs = _read_inputs(files)
    batch = project.suggest(
        [text for _, text in inputs], limit=limit, threshold=threshold
    )
    lang = language or project.language
    vocab = project.vocab
    results = []
    for (name, text), suggestions in zip(inputs, batch, strict=True):
        why = (
            project.backend.explain(text, [s.subject for s in suggestions])
            if explain
            else {}
        )
        items = [
            {
                "uri": vocab.uris[s.subject],
                "label": vocab.label(s.subject, lang),
                "notation": vocab.notations[s.subject] or None,
                "score": round(s.score, 4),
                **({"explanation": why.get(s.subject)} if explain else {}),
            }
            for s in suggestions
        ]
        results.append({"document": name, "suggestions": items})
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
            click.echo(f"<{item['uri']}>\t{item['label']}\t{item['score']:.4f}")
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
    ctx: _Context,
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

    project = ctx.project(project_id)
    vocab, lang = project.vocab, project.language
    files = sorted(Path(directory).glob("*.txt"))
    if not files:
        raise UsageError(f"Directory '{directory}' contains no .txt files")
    out = open(output, "w", encoding="utf-8") if output else None  # noqa: SIM115
    written = skipped = 0
    try:
        for chunk in tqdm(
            list(batched(files, batch_size)),
            desc="Indexing",
            unit=" batches",
            disable=None,
        ):
            texts = [f.read_text(encoding="utf-8", errors="replace") for f in chunk]
            batch = project.suggest(texts, limit=limit, threshold=threshold)
            for path, suggestions in zip(chunk, batch, strict=True):
                rows = [
                    (vocab.uris[s.subject], vocab.label(s.subject, lang), s.score)
                    for s in suggestions
                ]
                if out:
                    record = {
                        "id": path.stem,
                        "suggestions": [
                            {"uri": u, "label": lb, "score": round(sc, 4)}
                            for u, lb, sc in rows
                        ],
                    }
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    written += 1
                    continue
                target = path.with_name(path.stem + suffix)
                if target.exists() and not force:
                    skipped += 1
                    continue
                target.write_text(
                    "".join(f"<{u}>\t{lb}\t{sc:.4f}\n" for u, lb, sc in rows),
                    encoding="utf-8",
                )
                written += 1
    finally:
        if out:
            out.close()
    click.echo(
        f"Wrote suggestions for {written} documents"
        + (f"; {skipped} existing files kept (use --force)" if skipped else ""),
        err=True,
    )


# -- evaluation ---------------------------------------------------------------


def _evaluate(project, paths, limit, threshold, batch_size=64):
    from tqdm import tqdm

    from indexer.eval import Evaluator

    corpus = project.corpus(paths)
    evaluator = Evaluator(
        len(project.vocab),
        limit=limit,
        threshold=threshold,
        seen=project.seen_subjects(),
    )
    batches = []
    for docs in tqdm(
        corpus.batches(batch_size), desc="Evaluating", unit=" batches", disable=None
    ):
        gold = [d.subjects for d in docs]
        suggestions = project.backend.suggest_batch([d.text for d in docs])
        evaluator.add(gold, suggestions)
        batches.append((gold, suggestions))
    _warn(corpus.stats.warnings())
    if corpus.stats.documents == 0:
        raise UsageError("The evaluation corpus contains no documents")
    return evaluator, batches


@cli.command("eval")
@click.argument("project_id")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="Subjects per document (default: the project's).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    help="Lowest score (default: the project's).",
)
@click.option(
    "--metrics-file", type=click.Path(dir_okay=False), help="Write the metrics as JSON."
)
@click.option(
    "--results-file",
    type=click.Path(dir_okay=False),
    help="Write per-subject results as TSV.",
)
@pass_context
def eval_command(
    ctx: _Context, project_id, paths, limit, threshold, metrics_file, results_file
) -> None:
    """Evaluate PROJECT against the gold subjects of a corpus."""
    project = ctx.project(project_id)
    limit = limit or project.limit
    threshold = project.threshold if threshold is None else threshold
    evaluator, _ = _evaluate(project, paths, limit, threshold)
    metrics = evaluator.results()
    for name, value in metrics.items():
        click.echo(
            f"{name:<28}{value:.4f}"
            if isinstance(value, float)
            else f"{name:<28}{value}"
        )
    if metrics_file:
        Path(metrics_file).write_text(
            json.dumps(
                {
                    "project": project.id,
                    "limit": limit,
                    "threshold": threshold,
                    **metrics,
                },
                indent=2,
            )
        )
    if results_file:
        vocab = project.vocab
        with open(results_file, "w", encoding="utf-8") as f:
            f.write("uri\tlabel\tsupport\ttp\tfp\tfn\tprecision\trecall\tf1\n")
            for r in evaluator.per_subject():
                label = vocab.label(r["subject"], project.language)
                f.write(
                    f"<{vocab.uris[r['subject']]}>\t{label}\t{r['support']}\t{r['tp']}\t{r['fp']}\t{r['fn']}\t"
                    f"{r['precision']:.4f}\t{r['recall']:.4f}\t{r['f1']:.4f}\n"
                )


@cli.command()
@click.argument("project_id")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--max-limit", default=15, show_default=True, type=click.IntRange(min=1))
@pass_context
def optimize(ctx: _Context, project_id, paths, max_limit) -> None:
    """Find the limit and threshold that maximise document-averaged F1."""
    from indexer.optimize import best_limit_threshold

    project = ctx.project(project_id)
    _, batches = _evaluate(project, paths, max_limit, 0.0)
    rows, best = best_limit_threshold(batches, len(project.vocab), max_limit)
    _table(
        [
            [
                str(r["limit"]),
                f"{r['threshold']:.2f}",
                f"{r['precision']:.4f}",
                f"{r['recall']:.4f}",
                f"{r['f1']:.4f}",
            ]
            for r in rows
        ],
        ["limit", "threshold", "precision", "recall", "f1"],
    )
    click.echo(
        f"\nBest: limit = {best['limit']}, threshold = {best['threshold']:.2f} (F1 "
        f"{best['f1']:.4f})"
    )
    click.echo(
        f"Add to [{project.id}] in projects.cfg:\nlimit = {best['limit']}\nthreshold "
        f"= {best['threshold']:.2f}"
    )


@cli.command()
@click.argument("project_id")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--trials", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--metric",
    default="ndcg@10",
    show_default=True,
    help="Metric to maximise (any of `indexer eval`'s, e.g. f1@5).",
)
@pass_context
def hyperopt(ctx: _Context, project_id, paths, trials, seed, metric) -> None:
    """Tune an ensemble's weights and exponent (or a backend's suggest-time
    parameters) on a validation corpus; prints the best as a config snippet."""
    from tqdm import tqdm

    from indexer.hyperopt import hyperopt as search

    project = ctx.project(project_id)
    with tqdm(total=trials, desc="Trials", unit=" trials", disable=None) as bar:
        result = search(
            project, paths, trials, seed, metric, progress=lambda _: bar.update()
        )
    click.echo(f"{len(result.trials)} trials, {metric} on {', '.join(paths)}")
    click.echo(f"current settings: {result.baseline.score:.4f}")
    click.echo(f"best:             {result.best.score:.4f}\n")
    click.echo(result.snippet())


@cli.command()
@click.argument("project_id")
@pass_context
def clear(ctx: _Context, project_id: str) -> None:
    """Delete PROJECT's trained model."""
    project = ctx.project(project_id)
    removed = project.clear()
    click.echo(
        f"Cleared '{project.id}'" if removed else f"Project '{project.id}' had no model"
    )


# -- serving ------------------------------------------------------------------


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
def serve(ctx: _Context, **settings) -> None:
    """Serve the REST API (/v1) and the web demo (/) with waitress."""
    from indexer.rest import run

    run(ctx.projects, **settings)


@cli.command("run-dev")
@_serve_options
@pass_context
def run_dev(ctx: _Context, **settings) -> None:
    """Serve with Flask's development server (same as `serve --dev`)."""
    from indexer.rest import run

    run(ctx.projects, dev=True, **settings)


if __name__ == "__main__":
    main()
