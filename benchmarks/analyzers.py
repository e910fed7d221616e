"""Analyzers compared: Snowball against the lemmatizers, per backend, with
bootstrap intervals and paired differences against Snowball.

    python benchmarks/analyzers.py [--datasets archaeology,kirjastonhoitaja]
        [--analyzers snowball,simplemma,voikko] [--backends lexical,tfidf]
        [--set lexical.compound_parts=yes] [--n-boot 1000] [--speed] [--fusion]
        [--tag TAG]

An analyzer may carry lexical settings after a '+', to compare variants with
one analyzer: `--analyzers voikko,voikko+compound_parts=yes --baseline voikko`.

Protocol, per dataset (never a `test` file):

- The held-out split is taken from train by the md5 of each line (1 in 10,
  as benchmarks/heldout.py does); every backend is trained on the other 9 in
  10 (`rest`) with each analyzer, and timed.
- Evaluated on the held-out split and on the dataset's own validate split
  where it has one (kirjastonhoitaja, makupalat; archaeology has only train
  and test, so only the held-out split).
- F1@5, nDCG@10 and unseen R@10 (gold subjects that never occur in `rest`)
  with 95% percentile bootstrap intervals over documents, and the paired
  difference of each analyzer against Snowball (`--baseline`) on the same resamples
  (indexer.significance): a difference counts only when its interval
  excludes zero (marked *).

`--fusion` adds, per analyzer, a `calibrated` fusion of that analyzer's
tfidf, xmc and lexical projects (the three are added to `--backends`), fitted
the tuning-split way of benchmarks/heldout.py: the sources trained on 16/19 of
`rest`, the fusion on the other 3/19 as they score it, then the sources
retrained on all of `rest`. Its rows are evaluated and compared like the
others; its `train s` is the whole of it (sources twice and the fusion).

`--speed` measures tokens/s of each analyzer on the training texts: cold (no
cache), a first pass with the cache (what training sees) and a warm pass.

Prints one table per run and writes benchmarks/results/analyzers[-TAG].json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATASETS,
    RESULTS,
    Timer,
    markdown_table,
    save_results,
    split_lines,
    training_counts,
    write_config,
)
from ensembles import parse_changes  # noqa: E402
from heldout import SOURCES, TUNING, fit_split_fusion  # noqa: E402
from heldout import SPEC as HELDOUT_SPEC  # noqa: E402

from indexer.eval import Evaluator  # noqa: E402
from indexer.project import Projects  # noqa: E402
from indexer.significance import bootstrap, paired_difference  # noqa: E402

# heldout.py's datasets (vocabulary, language, train, validate split or None),
# without a withheld test split: an analyzer is never measured on `test`
SPEC = {
    name: (*spec[:3], None if spec[3] and spec[3].endswith("test.tsv") else spec[3])
    for name, spec in HELDOUT_SPEC.items()
}
SETTINGS = {"gnd-tibkat-en": {"lexical": {"label_language": "de"}}}
FUSION = "calibrated"
METRICS = {"f1@5": "f1@5", "ndcg@10": "ndcg@10", "unseen_recall@10": "unseen R@10"}


def analyzer_setting(name: str, language: str) -> str:
    return f"{name.split('+')[0]}({language})"


def variant_settings(name: str, backend: str) -> dict:
    """The lexical settings after '+' in an analyzer name (voikko+KEY=VALUE)."""
    if backend != "lexical":
        return {}
    items = name.split("+")[1:]
    return dict(item.split("=", 1) for item in items)


def project_id(backend: str, analyzers: list[str], analyzer: str) -> str:
    return f"{backend}-{analyzers.index(analyzer)}"


def evaluator_of(project, path: Path, seen) -> tuple[Evaluator, float]:
    """`project` evaluated on the corpus at `path` (and the seconds it took)."""
    evaluator = Evaluator(len(project.vocab), limit=10, seen=seen)
    started = time.perf_counter()
    for docs in project.corpus([path]).batches(64):
        batch = project.backend.suggest_batch([d.text for d in docs])
        evaluator.add([d.subjects for d in docs], batch)
    return evaluator, time.perf_counter() - started


def bench(name: str, args, changes: dict) -> tuple[list[dict], dict]:
    vocab, language, train, validate = SPEC[name]
    workdir = RESULTS / "work" / f"analyzers-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    paths = split_lines(DATASETS / train, workdir, (("rest", 9), ("heldout", 1)))
    splits = {"heldout": paths["heldout"]}
    if validate:
        splits["validate"] = DATASETS / validate
    sections = {}
    for analyzer in args.analyzers:
        for backend in args.backends:
            sections[project_id(backend, args.analyzers, analyzer)] = {
                "language": language,
                "backend": backend,
                "analyzer": analyzer_setting(analyzer, language),
                **SETTINGS.get(name, {}).get(backend, {}),
                **changes.get(backend, {}),
                **variant_settings(analyzer, backend),
            }
    if args.fusion:
        paths.update(split_lines(paths["rest"], workdir, parts=TUNING))
        for analyzer in args.analyzers:
            sources = [project_id(s, args.analyzers, analyzer) for s in SOURCES]
            sections[project_id(FUSION, args.analyzers, analyzer)] = {
                "language": language,
                "backend": FUSION,
                "sources": ", ".join(sources),
                **changes.get(FUSION, {}),
            }
    projects = Projects.from_path(
        write_config(workdir, "vocab", DATASETS / vocab, sections)
    )
    from indexer.analyzer import build_analyzer

    # outside the timings: the vocabulary, imports and dictionaries load once
    projects.get(next(iter(sections))).train([paths["heldout"]], jobs=1)
    info: dict = {"train_s": {}, "fusion": {}}
    if args.fusion:
        for analyzer in args.analyzers:
            fusion = project_id(FUSION, args.analyzers, analyzer)
            sources = sections[fusion]["sources"].split(", ")
            build_analyzer.cache_clear()
            with Timer() as t:
                fitted = fit_split_fusion(projects, sources, fusion, paths, jobs=1)
            info["fusion"][fusion] = {
                "fit_s": round(t.seconds, 1),
                "heldout_documents": fitted.get("heldout_documents"),
                "unseen_examples": fitted.get("unseen_examples"),
            }
            print(f"{name}: fitted {fusion} on the tuning split in {t.seconds:.0f} s")
    for pid, section in sections.items():
        if section["backend"] == FUSION:
            continue  # fitted above; its sources are retrained here
        if pid.startswith(args.backends[0]):
            build_analyzer.cache_clear()  # each analyzer starts with a cold cache
        with Timer() as t:
            projects.get(pid).train([paths["rest"]], jobs=1)
        info["train_s"][pid] = round(t.seconds, 1)
        setting = section["analyzer"]
        print(f"{name}: trained {pid} ({setting}) in {t.seconds:.0f} s", flush=True)
    for fusion, fitted in info["fusion"].items():
        sources = sections[fusion]["sources"].split(", ")
        whole = fitted["fit_s"] + sum(info["train_s"][s] for s in sources)
        info["train_s"][fusion] = round(whole, 1)
    seen = training_counts(projects.get(next(iter(sections))), paths["rest"])
    rows = []
    backends = args.backends + ([FUSION] if args.fusion else [])
    for split, path in splits.items():
        for backend in backends:
            evaluators = {}
            for analyzer in args.analyzers:
                pid = project_id(backend, args.analyzers, analyzer)
                project = projects.get(pid)
                for source in sections[pid].get("sources", "").split(", "):
                    if source:  # a fusion's sources were retrained since its fit
                        projects.get(source).unload()
                project.unload()
                evaluators[analyzer], seconds = evaluator_of(project, path, seen)
                docs = evaluators[analyzer].results()["documents"]
                row = {
                    "dataset": name,
                    "split": split,
                    "backend": backend,
                    "analyzer": analyzer,
                    "docs": docs,
                    "train s": f"{info['train_s'][pid]:.1f}",
                    "ms/doc": round(1000 * seconds / max(1, docs), 1),
                }
                intervals = bootstrap(
                    evaluators[analyzer], args.n_boot, metrics=list(METRICS)
                )
                for metric, label in METRICS.items():
                    ci = intervals[metric]
                    row[label] = (
                        f"{ci.point:.3f} [{ci.low:.3f}, {ci.high:.3f}]"
                        if ci.point == ci.point  # no unseen gold: NaN
                        else "n/a"
                    )
                    row[f"_{metric}"] = [ci.point, ci.low, ci.high]
                if analyzer != args.baseline and args.baseline in evaluators:
                    diffs = paired_difference(
                        evaluators[analyzer],
                        evaluators[args.baseline],
                        args.n_boot,
                        metrics=list(METRICS),
                    )
                    for metric, label in METRICS.items():
                        d = diffs[metric]
                        mark = "*" if d.significant else ""
                        row[f"Δ {label}"] = (
                            f"{d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}]{mark}"
                            if d.difference == d.difference
                            else "n/a"
                        )
                        row[f"_d_{metric}"] = [d.difference, d.low, d.high]
                rows.append(row)
                print({k: v for k, v in row.items() if not k.startswith("_")})
    return rows, info


def speed(name: str, analyzers: list[str], limit: int) -> list[dict]:
    """Tokens/s of each analyzer on the first `limit` training texts."""
    from indexer.analyzer import build_analyzer, parse_analyzer

    _, language, train, _ = SPEC[name]
    texts = []
    with open(DATASETS / train, encoding="utf-8") as f:
        for line in f:
            texts.append(line.split("\t")[0])
            if len(texts) >= limit:
                break
    rows = []
    for analyzer in analyzers:
        setting = analyzer_setting(analyzer, language)
        row = {"dataset": name, "analyzer": analyzer, "texts": len(texts)}
        for label, options in (("cold", ",cache_size=0"), ("cached", "")):
            spec = parse_analyzer(setting.replace(")", f"{options})"))
            build_analyzer.cache_clear()  # a fresh cache for each measurement
            instance = build_analyzer(spec)
            instance.tokens("warm up the imports and dictionaries")
            instance.stem.cache_clear()
            with Timer() as t:
                n = sum(len(instance.tokens(text)) for text in texts)
            row["tokens"] = n
            row[f"{label} tok/s"] = round(n / t.seconds)
            if label == "cached":
                with Timer() as t:
                    n = sum(len(instance.tokens(text)) for text in texts)
                row["warm tok/s"] = round(n / t.seconds)
                row["word types"] = instance.stem.cache_info().currsize
        rows.append(row)
        print(row, flush=True)
    build_analyzer.cache_clear()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="archaeology,kirjastonhoitaja")
    parser.add_argument("--analyzers", default="snowball,simplemma,voikko")
    parser.add_argument("--backends", default="lexical,tfidf")
    parser.add_argument("--baseline", default="snowball")
    parser.add_argument("--set", action="append", default=[], metavar="B.KEY=VALUE")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--speed", action="store_true", help="tokens/s only")
    parser.add_argument("--speed-texts", type=int, default=500)
    parser.add_argument(
        "--fusion",
        action="store_true",
        help="also a calibrated fusion of tfidf, xmc and lexical per analyzer",
    )
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    args.analyzers = args.analyzers.split(",")
    args.backends = args.backends.split(",")
    if args.fusion:
        args.backends += [s for s in SOURCES if s not in args.backends]
    datasets = args.datasets.split(",")
    if args.speed:
        rows = [r for d in datasets for r in speed(d, args.analyzers, args.speed_texts)]
        columns = ["dataset", "analyzer", "texts", "tokens", "word types"]
        columns += ["cold tok/s", "cached tok/s", "warm tok/s"]
        print(markdown_table(rows, columns))
        save_results("analyzers-speed", {"rows": rows}, args.tag)
        return
    changes = parse_changes(args.set, args.backends + [FUSION])
    rows, info = [], {}
    for name in datasets:
        dataset_rows, info[name] = bench(name, args, changes)
        rows += dataset_rows
    columns = ["dataset", "split", "backend", "analyzer", "docs"]
    columns += list(METRICS.values())
    columns += [f"Δ {label}" for label in METRICS.values()]
    columns += ["train s", "ms/doc"]
    print(markdown_table(rows, columns))
    save_results(
        "analyzers", {"rows": rows, "info": info, "changes": changes}, args.tag
    )


if __name__ == "__main__":
    main()
