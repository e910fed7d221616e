"""Commands that measure and tune: eval, compare, optimize, hyperopt."""

from __future__ import annotations

import json
from pathlib import Path

import click

from indexer.cli.app import Context, cli, pass_context, print_table, warn
from indexer.cli.options import at_least, limit_option, threshold_option
from indexer.errors import IndexerError, UsageError

CONFIDENCE = 0.95
#: resamples asked for at most: the replicates of every metric are kept (and
#: per subject for --results-file), so 10 million took 55 s and 2.6 GB on ten
#: documents; percentile intervals are stable long before 100,000
MAX_BOOTSTRAP = 100_000


def _check_output(option: str, path: str | None) -> None:
    """A usage error now, before a long evaluation, for an output file that
    cannot be made: one under a file rather than a folder (missing folders
    are made when it is written, as for the report)."""
    if not path:
        return
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(
            f"{option} {path}: {folder} is a file, not a folder: name a file "
            "in a folder"
        )


def _write_output(option: str, path: str, text: str) -> None:
    """Write `text` to `path` whole or not at all; an error that names the
    file (not a traceback) when the system refuses it."""
    from indexer.report import write_atomic

    try:
        write_atomic(Path(path), text)
    except OSError as exc:
        raise IndexerError(
            f"{option} {path}: could not write it ({exc.strerror or exc})"
        ) from None


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
    warn(corpus.stats.warnings())
    if corpus.stats.documents == 0:
        raise UsageError("The evaluation corpus contains no documents")
    return evaluator, batches


def _evaluate_pair(project_a, project_b, paths, batch_size=64):
    """Both projects suggest for the same documents (each once), at their own
    limit and threshold; the corpus is read once."""
    from tqdm import tqdm

    from indexer.eval import Evaluator

    if project_a.config.vocab != project_b.config.vocab:
        raise UsageError(
            f"Projects '{project_a.id}' and '{project_b.id}' use different "
            f"vocabularies ('{project_a.config.vocab}' and "
            f"'{project_b.config.vocab}'): a comparison needs the same subjects"
        )
    corpus = project_a.corpus(paths)
    evaluators = [
        Evaluator(
            len(p.vocab), limit=p.limit, threshold=p.threshold, seen=p.seen_subjects()
        )
        for p in (project_a, project_b)
    ]
    for docs in tqdm(
        corpus.batches(batch_size), desc="Evaluating", unit=" batches", disable=None
    ):
        gold = [d.subjects for d in docs]
        texts = [d.text for d in docs]
        for project, evaluator in zip((project_a, project_b), evaluators, strict=True):
            evaluator.add(gold, project.backend.suggest_batch(texts))
    warn(corpus.stats.warnings())
    if corpus.stats.documents == 0:
        raise UsageError("The evaluation corpus contains no documents")
    return evaluators


def _metric_line(name, value, interval=None) -> str:
    """`name  value` or, with an interval, `name  value  [low, high]`."""
    if not isinstance(value, float):
        return f"{name:<28}{value}"
    line = f"{name:<28}{value:.4f}"
    if interval is not None:
        line += f"  [{interval.low:.4f}, {interval.high:.4f}]"
    return line


def _finite(value: float) -> float | None:
    """A float for JSON: NaN (no unseen gold subjects, say) becomes null."""
    return None if value != value else value


def _bootstrap_json(intervals, n_boot: int, seed: int) -> dict:
    return {
        "replicates": n_boot,
        "confidence": CONFIDENCE,
        "seed": seed,
        "intervals": {
            name: {"low": _finite(iv.low), "high": _finite(iv.high)}
            for name, iv in intervals.items()
        },
    }


@cli.command("eval")
@click.argument("project_id")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@limit_option("Subjects per document (default: the project's).")
@threshold_option("Lowest score (default: the project's).")
@click.option(
    "--metrics-file", type=click.Path(dir_okay=False), help="Write the metrics as JSON."
)
@click.option(
    "--results-file",
    type=click.Path(dir_okay=False),
    help="Write per-subject results as TSV.",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(1, MAX_BOOTSTRAP),
    help="Resample the documents N times and give each metric's 95% interval "
    f"(at most {MAX_BOOTSTRAP}).",
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed of the resampling."
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    help="Write an evaluation report: .html (plots, tables) or .json (its data); "
    "the project keeps the last one.",
)
@pass_context
def eval_command(
    ctx: Context,
    project_id,
    paths,
    limit,
    threshold,
    metrics_file,
    results_file,
    bootstrap,
    seed,
    report,
) -> None:
    """Evaluate PROJECT against the gold subjects of a corpus."""
    project = ctx.project(project_id)
    limit = limit or project.limit
    threshold = project.threshold if threshold is None else threshold
    _check_output("--metrics-file", metrics_file)
    _check_output("--results-file", results_file)
    _check_output("--report", report)
    if report:
        from indexer.report import check_report_path

        check_report_path(report)
    evaluator, batches = _evaluate(project, paths, limit, threshold)
    metrics = evaluator.results()
    intervals = {}
    if bootstrap:
        from indexer.significance import bootstrap as resample

        intervals = resample(evaluator, bootstrap, seed, CONFIDENCE)
    for name, value in metrics.items():
        click.echo(_metric_line(name, value, intervals.get(name)))
    if metrics_file:
        data = {"project": project.id, "limit": limit, "threshold": threshold}
        data.update({name: _finite(value) for name, value in metrics.items()})
        if bootstrap:
            data["bootstrap"] = _bootstrap_json(intervals, bootstrap, seed)
        _write_output("--metrics-file", metrics_file, json.dumps(data, indent=2))
    if results_file:
        _write_results(project, evaluator, results_file, bootstrap, seed)
    if report:
        from indexer.report import write_report

        try:
            saved = write_report(
                project,
                report,
                evaluator,
                batches,
                paths,
                intervals=intervals,
                command=_eval_command_line(
                    project.id, paths, limit, threshold, bootstrap, seed, report
                ),
            )
        except OSError as exc:
            raise IndexerError(
                f"--report {report}: could not write it ({exc.strerror or exc})"
            ) from None
        click.echo(f"Report written to {report} (kept as {saved})", err=True)


def _write_results(project, evaluator, path, bootstrap: int | None, seed: int):
    """Per-subject results as TSV; with `bootstrap`, each subject's precision,
    recall and F1 intervals in six more columns (empty: no interval)."""
    vocab = project.vocab
    columns = ["precision", "recall", "f1"]
    intervals = {}
    if bootstrap:
        from indexer.significance import subject_intervals

        intervals = subject_intervals(evaluator, bootstrap, seed, CONFIDENCE)
    header = ["uri", "label", "support", "tp", "fp", "fn", *columns]
    header += [f"{c}_{end}" for c in columns for end in ("low", "high")] * bool(
        intervals
    )
    lines = ["\t".join(header)]
    for i, r in enumerate(evaluator.per_subject()):
        s = r["subject"]
        row = [f"<{vocab.uris[s]}>", vocab.label(s, project.language)]
        row += [str(r[k]) for k in ("support", "tp", "fp", "fn")]
        row += [f"{r[c]:.4f}" for c in columns]
        for name in [f"{c}_{end}" for c in columns for end in ("low", "high")]:
            if name in intervals:
                value = intervals[name][i]
                row.append("" if value != value else f"{value:.4f}")
        lines.append("\t".join(row))
    _write_output("--results-file", path, "".join(line + "\n" for line in lines))


def _eval_command_line(project_id, paths, limit, threshold, bootstrap, seed, report):
    """The `indexer eval` command that reproduces a report, with the operating
    point spelled out (rebuilt from the parameters, so it is the same however
    the command was started: console script, `python -m`, or a test runner)."""
    import shlex

    words = ["indexer", "eval", project_id, *paths]
    words += ["--limit", str(limit), "--threshold", str(threshold)]
    if bootstrap:
        words += ["--bootstrap", str(bootstrap), "--seed", str(seed)]
    return shlex.join([*words, "--report", report])


@cli.command()
@click.argument("project_a")
@click.argument("project_b")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--bootstrap",
    default=1000,
    show_default=True,
    type=click.IntRange(1, MAX_BOOTSTRAP),
    help=f"Resamples of the documents (at most {MAX_BOOTSTRAP}).",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Metric to compare (repeatable; default: all of `indexer eval`'s).",
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed of the resampling."
)
@click.option(
    "--results-file",
    type=click.Path(dir_okay=False),
    help="Also write the comparison as JSON (each metric's A, B, A - B, "
    "interval and verdict).",
)
@pass_context
def compare(
    ctx: Context, project_a, project_b, paths, bootstrap, metrics, seed, results_file
):
    """Compare PROJECT_A with PROJECT_B on the same documents: each metric's
    difference A - B with its paired 95% bootstrap interval."""
    from indexer.significance import metric_names, paired_difference

    _check_output("--results-file", results_file)
    a, b = ctx.project(project_a), ctx.project(project_b)
    known = metric_names()
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise UsageError(
            f"Unknown metric {unknown[0]!r}; choose from: {', '.join(known)}"
        )
    evaluator_a, evaluator_b = _evaluate_pair(a, b, paths)
    summary = evaluator_a.results()
    if not summary.get("documents_with_subjects"):
        raise UsageError(
            "No document of the corpus has gold subjects of the vocabulary: "
            "there is nothing to compare"
        )
    try:
        diffs = paired_difference(
            evaluator_a, evaluator_b, bootstrap, seed, CONFIDENCE, metrics or None
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    click.echo(f"A = {a.id}, B = {b.id}; {summary['documents']} documents")
    print_table(
        [
            [
                name,
                f"{d.a:.4f}",
                f"{d.b:.4f}",
                f"{d.difference:+.4f}",
                f"[{d.low:+.4f}, {d.high:+.4f}]",
                d.verdict,
            ]
            for name, d in diffs.items()
        ],
        ["metric", "A", "B", "A-B", f"{CONFIDENCE:.0%} interval", "verdict"],
    )
    if results_file:
        data = {
            "a": a.id,
            "b": b.id,
            "documents": summary["documents"],
            "bootstrap": bootstrap,
            "seed": seed,
            "confidence": CONFIDENCE,
            "metrics": {
                name: {
                    "a": d.a,
                    "b": d.b,
                    "difference": d.difference,
                    "low": d.low,
                    "high": d.high,
                    "verdict": d.verdict,
                }
                for name, d in diffs.items()
            },
        }
        _write_output("--results-file", results_file, json.dumps(data, indent=2))


@cli.command()
@click.argument("project_id")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@at_least(1, "--max-limit", default=15)
@pass_context
def optimize(ctx: Context, project_id, paths, max_limit) -> None:
    """Find the limit and threshold that maximise document-averaged F1."""
    from indexer.optimize import best_limit_threshold

    project = ctx.project(project_id)
    _, batches = _evaluate(project, paths, max_limit, 0.0)
    rows, best = best_limit_threshold(batches, len(project.vocab), max_limit)
    print_table(
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
@at_least(1, "--trials", default=100)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--metric",
    default="ndcg@10",
    show_default=True,
    help="Metric to maximise (any of `indexer eval`'s, e.g. f1@5).",
)
@pass_context
def hyperopt(ctx: Context, project_id, paths, trials, seed, metric) -> None:
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
