"""Cross-fitting a calibrated fusion on the local engine and on Ray: wall time
and the largest difference of the fusions' scores.

    python benchmarks/crossfit_ray.py [--dataset ykl-makupalat] [--folds 5]
        [--workers 2] [--documents N] [--hash-seed 0] [--order local,ray]
        [--tag TAG]

The dataset's train.tsv is split by the md5 of each line: 9 lines in 10 train
(the first N of them with --documents), 1 in 10 is scored by both fusions
(never a `test` file). The fusion of tfidf, xmc and lexical is cross-fitted
twice from scratch, each in a data dir of its own, by `indexer train FUSION
--cross-fit K` in a process of its own: on the local engine (one training at
a time) and with `--engine ray --workers W` (a local Ray cluster started by
the command: its start-up is part of the time), in the order --order gives.
The vocabulary is loaded before either is timed. Both run with
PYTHONHASHSEED=0 (--hash-seed, 'random' for none), which Ray's workers
inherit; the sources no longer depend on it (lexical's training gives the
same model under any hash seed), so 'random' checks that too.
Both fusions then suggest for the scored
split; the largest absolute difference of their score matrices is reported,
with the load average of the machine before and after each run (other
people's work on a shared machine slows both) and the cores the machine kept
busy meanwhile (from /proc/stat: every process's).
Writes benchmarks/results/crossfit_ray[-TAG].json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, RESULTS, save_results, split_lines, write_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FUSION = "fusion"
SOURCES = ["tfidf", "xmc", "lexical"]
LANGUAGE = {"ykl-makupalat": "fi", "yso-kirjastonhoitaja": "fi"}


def workspace(workdir: Path, engine: str, dataset: str, folds: int) -> Path:
    """A fresh data dir and projects.cfg for one engine's run."""
    place = workdir / engine
    shutil.rmtree(place, ignore_errors=True)
    place.mkdir(parents=True)
    language = LANGUAGE[dataset]
    settings = {s: {"language": language, "backend": s} for s in SOURCES}
    settings[FUSION] = {
        "language": language,
        "backend": "calibrated",
        "sources": ", ".join(SOURCES),
        "cross_fit": folds,
    }
    return write_config(place, "vocab", DATASETS / dataset / "vocab.ttl", settings)


def cross_fit(
    config: Path, corpus: Path, folds: int, engine: list[str], seed: str
) -> dict:
    """Run `indexer train FUSION --cross-fit K` in a process of its own, timed."""
    from indexer.project import Projects

    vocab = Projects.from_path(config).get(FUSION).vocab  # loaded before timing
    assert len(vocab)
    command = [sys.executable, "-m", "indexer", "--projects", str(config), "train"]
    command += [FUSION, str(corpus), "--cross-fit", str(folds), *engine]
    before = os.getloadavg()
    busy_before = machine_cpu_seconds()
    started = time.perf_counter()
    done = subprocess.run(
        command,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            **({"PYTHONHASHSEED": seed} if seed != "random" else {}),
        },
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    busy = machine_cpu_seconds() - busy_before
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    return {
        "seconds": round(seconds, 1),
        "load_before": [round(x, 2) for x in before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        # every process's, not only the run's: read with the load averages
        "machine_cores_busy": round(busy / seconds, 2),
        "said": done.stderr.strip().splitlines()[-2:],
    }


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (not idle) since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def fusion_scores(config: Path, texts: list[str]):
    from indexer.project import Projects

    return Projects.from_path(config).get(FUSION).suggest(texts).matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ykl-makupalat", choices=list(LANGUAGE))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--documents", type=int, default=0, help="0: all")
    parser.add_argument("--hash-seed", default="0", help="'random': none set")
    parser.add_argument("--order", default="local,ray", help="which engine first")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    workdir = RESULTS / "work" / f"crossfit-ray-{args.dataset}"
    workdir.mkdir(parents=True, exist_ok=True)
    parts = split_lines(
        DATASETS / args.dataset / "train.tsv", workdir, (("rest", 9), ("scored", 1))
    )
    corpus = parts["rest"]
    if args.documents:
        lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
        corpus = workdir / f"rest-{args.documents}.tsv"
        corpus.write_text("".join(lines[: args.documents]), encoding="utf-8")
    texts = [
        line.split("\t")[0]
        for line in parts["scored"].read_text(encoding="utf-8").splitlines()
    ]
    engines = {
        "local": [],
        "ray": ["--engine", "ray", "--workers", str(args.workers)],
    }
    order = args.order.split(",")
    if sorted(order) != sorted(engines):
        parser.error("--order: local,ray or ray,local")
    runs, configs = {}, {}
    for engine in order:
        options = engines[engine]
        configs[engine] = workspace(workdir, engine, args.dataset, args.folds)
        runs[engine] = cross_fit(
            configs[engine], corpus, args.folds, options, args.hash_seed
        )
        print(f"{engine}: {runs[engine]}", flush=True)
    local = fusion_scores(configs["local"], texts)
    on_ray = fusion_scores(configs["ray"], texts)
    difference = abs(local - on_ray).max() if local.nnz or on_ray.nnz else 0.0
    results = {
        "dataset": args.dataset,
        "documents": len(corpus.read_text(encoding="utf-8").splitlines()),
        "scored_documents": len(texts),
        "folds": args.folds,
        "workers": args.workers,
        "hash_seed": args.hash_seed,
        "order": order,
        "cpus": os.cpu_count(),
        "runs": runs,
        "ray_over_local": round(runs["ray"]["seconds"] / runs["local"]["seconds"], 3),
        "largest_score_difference": float(difference),
        "same_suggested_subjects": bool(
            (local != 0).nnz == (on_ray != 0).nnz
            and ((local != 0) != (on_ray != 0)).nnz == 0
        ),
    }
    print(results)
    print(save_results("crossfit_ray", results, args.tag))


if __name__ == "__main__":
    main()
