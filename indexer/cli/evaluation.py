"""Commands that measure and tune: eval, optimize, hyperopt."""

from __future__ import annotations

import json
from pathlib import Path

import click

from indexer.cli.app import Context, cli, pass_context, print_table, warn
from indexer.cli.options import at_least, limit_option, threshold_option
from indexer.errors import UsageError


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
@pass_context
def eval_command(
    ctx: Context, project_id, paths, limit, threshold, metrics_file, results_file
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
