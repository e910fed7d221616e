"""Shared helpers for the benchmark scripts: datasets, workspaces, timing."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("INDEXER_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "benchmarks" / "results"

# name -> (vocabulary, language, train, evaluation split)
DATASETS_SPEC = {
    "archaeology": (
        "yso-archaeology/vocab.ttl",
        "fi",
        "yso-archaeology/train.tsv",
        "yso-archaeology/test.tsv",
    ),
    "kirjastonhoitaja": (
        "yso-kirjastonhoitaja/vocab.ttl",
        "fi",
        "yso-kirjastonhoitaja/train.tsv",
        "yso-kirjastonhoitaja/validate.tsv",
    ),
    "gnd-tibkat-en": ("gnd-tibkat/vocab.ttl", "en", "gnd-tibkat/train-en.tsv", None),
    "ykl-makupalat": (
        "ykl-makupalat/vocab.ttl",
        "fi",
        "ykl-makupalat/train.tsv",
        "ykl-makupalat/validate.tsv",
    ),
}


def split_lines(
    source: Path, workdir: Path, parts=(("train", 8), ("tune", 1), ("test", 1))
) -> dict:
    """Deterministic split of a TSV by the md5 of each line."""
    from contextlib import ExitStack

    total = sum(n for _, n in parts)
    targets = {name: workdir / f"{source.stem}-{name}.tsv" for name, _ in parts}
    buckets = [name for name, n in parts for _ in range(n)]
    with ExitStack() as stack:
        outputs = {
            n: stack.enter_context(open(p, "w", encoding="utf-8"))
            for n, p in targets.items()
        }
        with open(source, encoding="utf-8") as f:
            for line in f:
                bucket = int(hashlib.md5(line.encode()).hexdigest(), 16) % total
                outputs[buckets[bucket]].write(line)
    return targets


def dataset_paths(name: str, workdir: Path) -> dict:
    """{'vocab', 'language', 'train', 'test'} for a dataset; splits train if needed."""
    vocab, language, train, test = DATASETS_SPEC[name]
    paths = {"vocab": DATASETS / vocab, "language": language, "train": DATASETS / train}
    if test is None:
        split = split_lines(DATASETS / train, workdir)
        paths.update(train=split["train"], tune=split["tune"], test=split["test"])
    else:
        paths["test"] = DATASETS / test
    return paths


def write_config(
    workdir: Path, vocab_id: str, vocab: Path, sections: dict[str, dict]
) -> Path:
    """A projects.cfg in `workdir` with one vocabulary and the given projects."""
    lines = [f"[vocab:{vocab_id}]", f"source = {vocab}", ""]
    for project_id, settings in sections.items():
        lines.append(f"[{project_id}]")
        lines += [f"{k} = {v}" for k, v in {"vocab": vocab_id, **settings}.items()]
        lines.append("")
    path = workdir / "projects.cfg"
    path.write_text("\n".join(lines))
    return path


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def save_results(name: str, results, tag: str = "") -> Path:
    """benchmarks/results/NAME[-TAG].json"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}{f'-{tag}' if tag else ''}.json"
    path.write_text(json.dumps(results, indent=2))
    return path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(out)


def training_counts(project, train_path):
    """Subject frequencies of a training corpus (to score 'unseen' for any backend)."""
    import numpy as np

    counts = np.zeros(len(project.vocab), dtype=np.int64)
    for doc in project.corpus([train_path]):
        np.add.at(counts, doc.subjects, 1)
    return counts


def evaluate(
    project, path, seen, limit: int = 5, batch_size: int = 64
) -> tuple[dict, float, int]:
    """(metrics, suggest seconds, documents) of `project` on the corpus at `path`."""
    from indexer.eval import Evaluator

    evaluator = Evaluator(len(project.vocab), limit=limit, seen=seen)
    seconds, documents = 0.0, 0
    for docs in project.corpus([path]).batches(batch_size):
        with Timer() as t:
            batch = project.backend.suggest_batch([d.text for d in docs])
        seconds += t.seconds
        documents += len(docs)
        evaluator.add([d.subjects for d in docs], batch)
    return evaluator.results(), seconds, documents


def metric_row(
    dataset: str, backend: str, metrics: dict, seconds: float, documents: int, **extra
) -> dict:
    return {
        "dataset": dataset,
        "backend": backend,
        "f1@5": metrics["f1@5"],
        "ndcg": metrics["ndcg@10"],
        "precision@5": metrics["precision@5"],
        "recall@10": metrics["recall@10"],
        "unseen_recall@10": metrics.get("unseen_recall@10", float("nan")),
        "unseen_gold": metrics.get("unseen_gold", 0),
        "ms/doc": round(1000 * seconds / max(documents, 1), 2),
        **extra,
    }


def evaluated_row(
    dataset: str, label: str, project, path, seen, batch_size: int = 64, **extra
) -> dict:
    """`project` evaluated on the corpus at `path`, as one table row."""
    metrics, seconds, documents = evaluate(project, path, seen, batch_size=batch_size)
    return metric_row(dataset, label, metrics, seconds, documents, **extra)


METRIC_COLUMNS = [
    "dataset",
    "backend",
    "f1@5",
    "ndcg",
    "precision@5",
    "recall@10",
    "unseen_recall@10",
    "ms/doc",
]


def tree_rss(pid: int) -> int:
    """Resident bytes of process `pid` and its descendants (0 once gone),
    read from /proc."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        todo += [int(child) for child in children.split()]
    return total


class TreePeak:
    """`with TreePeak(pid) as peak:` samples the summed resident set of `pid`
    and its descendants every `every` seconds while the block runs; then
    `peak.bytes` is the largest sum seen (worker processes included, shared
    pages counted in each)."""

    def __init__(self, pid: int, every: float = 0.2):
        import threading

        self.pid, self.every, self.bytes = pid, every, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.bytes = max(self.bytes, tree_rss(self.pid))
            if self._done.wait(self.every):
                return

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def run_measured(
    command: list[str], workdir: Path, env: dict, stdin: str | None, every: float
):
    """Run `command` in `workdir` with its output in workdir/stage.log:
    (seconds, its own peak resident set in MB from `os.wait4`, the peak of
    its process tree in MB, its output). The tree's peak is the sampled one,
    or the process's own where that is larger (a run shorter than a sample
    is never seen whole). A failed run stops the benchmark with the end of
    that output."""
    import subprocess

    out = workdir / "stage.log"
    started = time.perf_counter()
    with open(out, "w") as log:
        child = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
        )
        with TreePeak(child.pid, every=every) as tree:
            if stdin is not None:
                child.stdin.write(stdin.encode())
                child.stdin.close()
            _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    text = out.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"`{' '.join(command)}` failed:\n{text[-3000:]}")
    own = usage.ru_maxrss / 1024
    return seconds, own, max(own, tree.bytes / 2**20), text
