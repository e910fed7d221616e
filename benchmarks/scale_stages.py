"""Time, peak memory and model size of each stage at catalogue scale, on
seeded synthetic data shaped like a national library's catalogue.

    nice -n 10 python benchmarks/scale_stages.py --size S
    nice -n 10 python benchmarks/scale_stages.py --size M --stages load-vocab,tfidf

Sizes: S = 20k concepts, 10k training documents; M = 100k, 50k; L = 200k, 200k;
XL = 200k, 1M (each with 1,000 held-out documents for eval). The vocabulary
is SKOS Turtle: concepts with 1-3 word prefLabels and 0-2 altLabels drawn from
a synthetic word list, in a hierarchy (each concept but the roots has one
broader concept chosen among the earlier ones). A document has 1-8 subjects drawn from a
Zipf-like distribution over the concepts and about 120 words: the labels of
its subjects and a few topic words of each subject, mixed into Zipf-distributed
background words. Everything is seeded (`--seed`), so a size is the same data
on every run.

Each stage is a fresh `python -m indexer ...` process, timed from start to exit;
its peak resident set is the child's own `ru_maxrss` (from `os.wait4`), and
`tree_peak_mb` the largest sum of the resident sets of the child and its worker
processes (sampled every 0.5 s, and at least the child's own; pages they share
are counted in each). Stages:
load-vocab; train tfidf, xmc (its default preset) and lexical; eval of each on
the held-out documents (F1@5); a cold `suggest` of one document with tfidf
(loading the model included). Model size: the project's model directory.

Prints a markdown table and, when results of two sizes exist, each stage's
growth exponent log(t2/t1)/log(n2/n1) in training documents; writes
benchmarks/results/scale_stages-SIZE.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, markdown_table, run_measured, save_results  # noqa: E402

SIZES = {  # concepts, training documents (T: a smoke test of the script)
    "T": (2_000, 1_000),
    "S": (20_000, 10_000),
    "M": (100_000, 50_000),
    "L": (200_000, 200_000),
    "XL": (200_000, 1_000_000),  # L's vocabulary, five times the documents
}
# the sizes the results and the plot compare (T only checks the script)
MEASURED_SIZES = tuple(size for size in SIZES if size != "T")
HELD_OUT = 1_000
STAGES = [
    "load-vocab",
    "train-tfidf",
    "train-xmc",
    "train-lexical",
    "eval-tfidf",
    "eval-xmc",
    "eval-lexical",
    "suggest-tfidf",
]
BASE = "http://example.org/c/"
SYLLABLES = [c + v for c in "bdfghjklmnprstvz" for v in "aeiou"]


def words(rng: np.random.Generator, n: int) -> list[str]:
    """`n` distinct pronounceable words of 2-4 syllables."""
    out: dict[str, None] = {}
    while len(out) < n:
        k = rng.integers(2, 5, size=n)
        picks = rng.integers(0, len(SYLLABLES), size=(n, 4))
        for length, row in zip(k, picks, strict=True):
            out.setdefault("".join(SYLLABLES[i] for i in row[:length]))
            if len(out) == n:
                break
    return list(out)


def zipf_sampler(rng: np.random.Generator, n: int, exponent: float = 1.0):
    """A function drawing `size` indexes in [0, n) with Zipf-like frequencies
    (the rank order shuffled, so frequent items are spread over the range)."""
    p = 1.0 / np.power(np.arange(1, n + 1) + 2.0, exponent)
    cdf = np.cumsum(p / p.sum())
    order = rng.permutation(n)

    def draw(size: int) -> np.ndarray:
        ranks = np.searchsorted(cdf, rng.random(size), side="right")
        return order[np.minimum(ranks, n - 1)]

    return draw


def generate(workdir: Path, concepts: int, documents: int, seed: int) -> None:
    """Write vocab.ttl, train.tsv and heldout.tsv of the given size."""
    rng = np.random.default_rng(seed)
    lexicon = words(rng, max(concepts, 20_000))
    label_word = zipf_sampler(rng, len(lexicon), 0.8)
    labels, topics = [], []
    lines = [
        "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .",
        f"@prefix c: <{BASE}> .",
        "",
    ]
    seen: set[str] = set()
    for i in range(concepts):
        while True:
            label = " ".join(lexicon[w] for w in label_word(rng.integers(1, 4)))
            if label not in seen:
                seen.add(label)
                break
        alts = [
            " ".join(lexicon[w] for w in label_word(rng.integers(1, 3)))
            for _ in range(rng.integers(0, 3))
        ]
        labels.append(label.split())
        topics.append(rng.integers(0, len(lexicon), size=4))
        props = [f'skos:prefLabel "{label}"@en']
        props += [f'skos:altLabel "{a}"@en' for a in alts if a not in seen]
        if i >= 50:  # the first 50 are the roots
            props.append(f"skos:broader c:{int(rng.integers(0, i))}")
        lines.append(f"c:{i} a skos:Concept ;\n    " + " ;\n    ".join(props) + " .")
    (workdir / "vocab.ttl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    subject = zipf_sampler(rng, concepts, 1.0)
    background = zipf_sampler(rng, len(lexicon), 1.1)

    def document() -> str:
        subjects = np.unique(subject(int(rng.integers(1, 9))))
        topical = []
        for s in subjects:
            topical += labels[s] * int(rng.integers(1, 4))
            topical += [lexicon[t] for t in topics[s][rng.integers(0, 4, size=6)]]
        n_background = max(120 - len(topical), 40)
        text = topical + [lexicon[w] for w in background(n_background)]
        order = rng.permutation(len(text))
        uris = " ".join(f"<{BASE}{s}>" for s in subjects)
        return " ".join(text[j] for j in order) + "\t" + uris

    for name, n in (("train.tsv", documents), ("heldout.tsv", HELD_OUT)):
        with open(workdir / name, "w", encoding="utf-8") as f:
            for _ in range(n):
                f.write(document() + "\n")


def write_config(workdir: Path) -> Path:
    cfg = workdir / "projects.cfg"
    cfg.write_text(
        "[vocab:v]\n"
        f"source = {workdir / 'vocab.ttl'}\n\n"
        + "".join(
            f"[{backend}]\nlanguage = en\nvocab = v\nbackend = {backend}\n\n"
            for backend in ("tfidf", "xmc", "lexical")
        )
    )
    return cfg


def run_stage(workdir: Path, cfg: Path, args: list[str], stdin: str | None = None):
    """Run `python -m indexer ARGS`: (seconds, peak RSS in MB, peak RSS of
    its process tree in MB, stdout+stderr)."""
    command = [sys.executable, "-m", "indexer", "--projects", str(cfg), *args]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return run_measured(command, workdir, env, stdin, every=0.5)


def model_mb(workdir: Path, project: str) -> float | None:
    found = [p for p in (workdir / "data").rglob("*") if p.is_dir()]
    for path in found:
        if path.name == project and path.parent.name == "projects":
            model = path.resolve()
            files = [f for f in model.rglob("*") if f.is_file()]
            return sum(f.stat().st_size for f in files) / 1e6
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="S")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/scale-stages"))
    parser.add_argument("--tag", default="", help="results file suffix")
    args = parser.parse_args()
    concepts, documents = SIZES[args.size]
    workdir = (args.work / args.size).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "heldout.tsv").is_file():
        started = time.perf_counter()
        generate(workdir, concepts, documents, args.seed)
        print(f"generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    cfg = write_config(workdir)
    one_doc = (workdir / "heldout.tsv").read_text().split("\n", 1)[0].split("\t")[0]
    commands = {
        "load-vocab": ["load-vocab", "v", str(workdir / "vocab.ttl")],
        "suggest-tfidf": ["suggest", "tfidf", "--limit", "10"],
    }
    for backend in ("tfidf", "xmc", "lexical"):
        commands[f"train-{backend}"] = ["train", backend, str(workdir / "train.tsv")]
        commands[f"eval-{backend}"] = [
            "eval",
            backend,
            str(workdir / "heldout.tsv"),
            "--limit",
            "5",
            "--metrics-file",
            str(workdir / f"metrics-{backend}.json"),
        ]
    rows = []
    for stage in args.stages.split(","):
        stdin = one_doc if stage == "suggest-tfidf" else None
        seconds, peak, tree_peak, log = run_stage(workdir, cfg, commands[stage], stdin)
        row = {
            "stage": stage,
            "seconds": round(seconds, 1),
            "peak_mb": round(peak),
            "tree_peak_mb": round(tree_peak),
        }
        if stage.startswith("train-"):
            row["model_mb"] = round(model_mb(workdir, stage[6:]) or 0, 1)
            layout = re.search(r"Layout: (\w+)", log)
            if layout:
                row["layout"] = layout.group(1)
        if stage.startswith("eval-"):
            metrics = json.loads((workdir / f"metrics-{stage[5:]}.json").read_text())
            row["F1@5"] = round(_f1(metrics), 4)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    result = {"size": args.size, "concepts": concepts, "documents": documents}
    previous = (
        RESULTS / f"scale_stages-{args.size}{f'-{args.tag}' if args.tag else ''}.json"
    )
    if previous.is_file():  # keep stages measured in earlier runs of this size
        kept = {r["stage"]: r for r in json.loads(previous.read_text())["rows"]}
        kept.update({r["stage"]: r for r in rows})
        rows = [kept[s] for s in STAGES if s in kept]
    save_results(f"scale_stages-{args.size}", {**result, "rows": rows}, args.tag)
    columns = [
        "stage",
        "seconds",
        "peak_mb",
        "tree_peak_mb",
        "model_mb",
        "layout",
        "F1@5",
    ]
    print(f"## {args.size}: {concepts} concepts, {documents} training documents\n")
    print(markdown_table(rows, columns))
    print_growth(args.tag)


def _f1(metrics: dict) -> float:
    for key in ("F1@5", "f1@5", "F1@5 (doc)"):
        if key in metrics:
            return float(metrics[key])
    for key, value in metrics.items():
        if "f1" in key.lower() and isinstance(value, int | float):
            return float(value)
    return float("nan")


def print_growth(tag: str = "") -> None:
    """Growth exponents between consecutive measured sizes (per stage)."""
    measured = []
    for size in MEASURED_SIZES:
        path = RESULTS / f"scale_stages-{size}{f'-{tag}' if tag else ''}.json"
        if path.is_file():
            measured.append(json.loads(path.read_text()))
    for a, b in zip(measured, measured[1:], strict=False):
        ratio = math.log(b["documents"] / a["documents"])
        before = {r["stage"]: r for r in a["rows"]}
        rows = [
            {
                "stage": r["stage"],
                "time": round(math.log(r["seconds"] / old["seconds"]) / ratio, 2),
                "memory": round(math.log(r["peak_mb"] / old["peak_mb"]) / ratio, 2),
            }
            for r in b["rows"]
            if (old := before.get(r["stage"]))
        ]
        print(f"\n## growth {a['size']} -> {b['size']}: ~ documents^exponent\n")
        print(markdown_table(rows, ["stage", "time", "memory"]))


if __name__ == "__main__":
    main()
