"""Batch indexing throughput: `indexer index` with --engine local and --engine
ray, 1 and 2 workers, for tfidf, xmc and the calibrated ensemble.

    python benchmarks/scale.py [--documents 20000] [--dataset ykl-makupalat]

The sources are trained on the dataset's train split, the calibrated fusion on
its validation split. The corpus to index is the train split's texts repeated
up to `--documents` records (JSONL with ids). Each run is a fresh
`python -m indexer index` process, timed from start to exit (project loading
and, for Ray, starting a local cluster included); the rate reported by the
command itself excludes the process start. Peak memory: the largest resident
set of one worker process (the command itself with -j 1, the worker processes
with -j 2, the Ray actors), sampled every 50 ms. Ray's fixed cost is measured
by indexing 100 documents.

Prints a markdown table; writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, RESULTS, ROOT, markdown_table, save_results  # noqa: E402

PROJECTS = {
    "tfidf": {"backend": "tfidf"},
    "xmc": {"backend": "xmc"},
    "lexical": {"backend": "lexical"},
    "calibrated": {"backend": "calibrated", "sources": "tfidf, xmc, lexical"},
}
MEASURED = ["tfidf", "xmc", "calibrated"]
RUNS = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]


def write_workspace(work: Path, dataset: str) -> Path:
    vocab = DATASETS / dataset / "vocab.ttl"
    lines = [f"[vocab:v]\nsource = {vocab}\n"]
    for project_id, settings in PROJECTS.items():
        lines.append(f"[{project_id}]\nlanguage = fi\nvocab = v")
        lines += [f"{k} = {v}" for k, v in settings.items()]
        lines.append("")
    cfg = work / "projects.cfg"
    cfg.write_text("\n".join(lines))
    return cfg


def write_corpus(path: Path, train: Path, documents: int) -> None:
    texts = [
        line.split("\t", 1)[0]
        for line in train.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    with open(path, "w", encoding="utf-8") as f:
        for n in range(documents):
            f.write(json.dumps({"id": f"r{n}", "text": texts[n % len(texts)]}) + "\n")


def indexer(cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "indexer", "--projects", str(cfg), *args]


def is_worker(process, engine: str, jobs: int, root_pid: int) -> bool:
    cmdline = " ".join(process.info["cmdline"] or [])
    if engine == "ray":
        return "RayIndexer" in cmdline
    if jobs == 1:
        return process.pid == root_pid
    return "spawn_main" in cmdline


def peak_worker_memory(pid: int, engine: str, jobs: int, stop: threading.Event):
    """Largest resident set of one worker process, in MB, until `stop`."""
    import psutil

    peak = 0
    root = psutil.Process(pid)
    while not stop.is_set():
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for process in family:
            try:
                process.info = {"cmdline": process.cmdline()}
                if is_worker(process, engine, jobs, pid):
                    peak = max(peak, process.memory_info().rss)
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    return peak / 2**20


def run_index(cfg: Path, project: str, corpus: Path, engine: str, jobs: int):
    out = corpus.with_name(f"out-{project}-{engine}-{jobs}.jsonl")
    width = ["-j", str(jobs)] if engine == "local" else ["--workers", str(jobs)]
    command = indexer(
        cfg, "index", project, str(corpus), "--output", str(out), "--force",
        "--engine", engine, *width,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    peak: list[float] = []
    sampler = threading.Thread(
        target=lambda: peak.append(peak_worker_memory(process.pid, engine, jobs, stop))
    )
    sampler.start()
    _, err = process.communicate()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-2000:]}")
    found = re.search(r"Indexed (\d+) documents in ([\d.]+) s", err)
    documents, seconds = int(found[1]), float(found[2])
    out.unlink()
    return {
        "documents": documents,
        "wall_s": round(wall, 1),
        "docs_per_s": round(documents / wall, 1),
        "docs_per_s_in_run": round(documents / seconds, 1),
        "peak_worker_mb": round(peak[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--dataset", default="ykl-makupalat")
    parser.add_argument("--projects", default=",".join(MEASURED))
    args = parser.parse_args()
    work = RESULTS / "work" / "scale"
    work.mkdir(parents=True, exist_ok=True)
    cfg = write_workspace(work, args.dataset)
    train = DATASETS / args.dataset / "train.tsv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for project in ("tfidf", "xmc", "lexical"):
        subprocess.run(indexer(cfg, "train", project, str(train)), env=env, check=True)
    validate = DATASETS / args.dataset / "validate.tsv"
    subprocess.run(
        indexer(cfg, "train", "calibrated", str(validate)), env=env, check=True
    )
    corpus = work / "corpus.jsonl"
    write_corpus(corpus, train, args.documents)
    small = work / "small.jsonl"
    write_corpus(small, train, 100)

    rows = []
    for project in args.projects.split(","):
        for engine, jobs in RUNS:
            result = run_index(cfg, project, corpus, engine, jobs)
            rows.append({"project": project, "engine": engine, "workers": jobs,
                         **result})  # fmt: skip
            print(rows[-1], flush=True)
    fixed = {
        engine: run_index(cfg, "tfidf", small, engine, 1)["wall_s"]
        for engine in ("local", "ray")
    }
    columns = ["project", "engine", "workers", "documents", "wall_s", "docs_per_s",
               "docs_per_s_in_run", "peak_worker_mb"]  # fmt: skip
    print(markdown_table(rows, columns))
    print(f"\nWall time for 100 documents (fixed cost): {fixed}")
    save_results("scale", {"runs": rows, "fixed_cost_100_docs_s": fixed,
                           "cpus": os.cpu_count()})  # fmt: skip


if __name__ == "__main__":
    main()
