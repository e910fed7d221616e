"""Core benchmark: tfidf and lexical quality, training time, suggest speed,
CLI start-up, and vocabulary load/reopen times.

    python benchmarks/core.py [--datasets archaeology,kirjastonhoitaja] [--skip-gnd]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATASETS,
    METRIC_COLUMNS,
    Timer,
    dataset_paths,
    evaluated_row,
    markdown_table,
    save_results,
    training_counts,
    write_config,
)

from indexer.project import Projects  # noqa: E402


def wall_time(args: list[str], stdin: str = "", repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        with Timer() as t:
            subprocess.run(
                args, input=stdin, capture_output=True, text=True, check=False
            )
        times.append(t.seconds)
    return statistics.median(times)


def bench_dataset(name: str, workdir: Path) -> tuple[list[dict], float]:
    paths = dataset_paths(name, workdir)
    lang = paths["language"]
    cfg = write_config(
        workdir,
        "vocab",
        paths["vocab"],
        {
            "tfidf": {"language": lang, "backend": "tfidf"},
            "lexical": {"language": lang, "backend": "lexical"},
            "lexical-trained": {"language": lang, "backend": "lexical"},
        },
    )
    projects = Projects.from_path(cfg)
    seen = training_counts(projects.get("tfidf"), paths["train"])
    rows = []
    for project_id in ("tfidf", "lexical", "lexical-trained"):
        project = projects.get(project_id)
        train_seconds = 0.0
        if project_id != "lexical":
            train_seconds = project.train([paths["train"]])["seconds"]
        rows.append(
            evaluated_row(
                name,
                project_id,
                project,
                paths["test"],
                seen,
                train_s=round(train_seconds, 1),
            )
        )
        print(rows[-1], flush=True)
    text = next(iter(projects.get("tfidf").corpus([paths["test"]]))).text
    command = [
        sys.executable,
        "-m",
        "indexer.cli",
        "--projects",
        str(cfg),
        "suggest",
        "tfidf",
    ]
    return rows, wall_time(command, text)


def bench_gnd_vocabulary(workdir: Path) -> dict:
    from indexer.vocab import Vocabulary

    source = DATASETS / "gnd-tibkat" / "vocab.ttl"
    vocab = Vocabulary("gnd", workdir / "gnd")
    with Timer() as parse:
        info = vocab.load_file(source)
    reopen = []
    for _ in range(3):
        with Timer() as t:
            reopened = Vocabulary("gnd", workdir / "gnd")
            reopened.id_of("https://d-nb.info/gnd/4451062-7")
            reopened.label(1000, "de")
        reopen.append(t.seconds)
    return {
        "concepts": info["concepts"],
        "parse_s": round(parse.seconds, 1),
        "reopen_s": round(min(reopen), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="archaeology,kirjastonhoitaja")
    parser.add_argument("--skip-gnd", action="store_true")
    args = parser.parse_args()
    results = {"help_s": wall_time([sys.executable, "-m", "indexer.cli", "--help"])}
    print(f"indexer --help: {results['help_s']:.3f} s", flush=True)
    rows, results["cold_suggest_s"] = [], {}
    for name in args.datasets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            dataset_rows, results["cold_suggest_s"][name] = bench_dataset(
                name, Path(tmp)
            )
            rows += dataset_rows
    results["rows"] = rows
    print("cold `indexer suggest` (trained tfidf), s:", results["cold_suggest_s"])
    if not args.skip_gnd:
        with tempfile.TemporaryDirectory() as tmp:
            results["gnd_vocabulary"] = bench_gnd_vocabulary(Path(tmp))
        print("GND vocabulary:", results["gnd_vocabulary"])
    print(markdown_table(rows, [*METRIC_COLUMNS, "train_s"]))
    save_results("core", results)


if __name__ == "__main__":
    main()
