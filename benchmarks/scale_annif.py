"""Annif 1.4.3 beside scale_stages: the same stages on the same synthetic files.

    nice -n 5 python benchmarks/scale_annif.py --size S
    nice -n 5 python benchmarks/scale_annif.py --size L \\
        --stages load-vocab,train-tfidf,eval-tfidf,suggest-tfidf

Annif runs from its own virtual environment (`--annif-python`, default
/tmp/annif-venv/bin/python; install it with
`pip install 'annif[omikuji]==1.4.3'`) through ../shared/peers/annif_shim.py,
which runs Annif's CLI without network access. The data are scale_stages'
files for the size (vocab.ttl, train.tsv, heldout.tsv in /tmp/scale-stages/SIZE,
generated with its seed when absent); Annif's projects.cfg and data directory go
to /tmp/scale-annif/SIZE. Three English projects on one vocabulary: tfidf,
omikuji with Annif's bonsai settings, mllm; each `limit = 100` and the
snowball(english) analyzer, as in ../shared/peers/annif-projects.cfg.

Each stage is a fresh Annif process, timed from start to exit. `peak_mb` is
`ru_maxrss` from `os.wait4` as in scale_stages: the largest single process of
the tree. `tree_peak_mb` is the sum of the tree's resident sets sampled every
0.2 s, which counts the worker processes that Annif's mllm training starts.
Annif's default jobs are kept (no `-j`); `annif_jobs` in the results says what
they amount to on this machine. Eval is `annif eval -m F1@5` (default limit 10;
F1@5 takes the top 5). Writes benchmarks/results/scale_annif-SIZE.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RESULTS,
    ROOT,
    markdown_table,
    run_measured,
    save_results,
)
from scale_stages import SIZES, STAGES, generate  # noqa: E402

SHIM = ROOT.parent / "shared" / "peers" / "annif_shim.py"
# our stage name -> Annif project: same kinds (associative tfidf, extreme
# multi-label classifier, lexical)
PROJECTS = {"tfidf": "tfidf", "xmc": "omikuji", "lexical": "mllm"}
BACKEND_SETTINGS = {
    "tfidf": {},
    "omikuji": {"cluster_balanced": "False", "cluster_k": "100", "max_depth": "3"},
    "mllm": {},
}


def annif_jobs() -> dict[str, str]:
    """What Annif 1.4.3's default `--jobs` means for each stage here."""
    cpus = os.cpu_count()
    return {
        "train-tfidf": "train -j 0: tfidf ignores jobs (one process)",
        "train-xmc": f"train -j 0: omikuji gets None, Rayon uses all {cpus} CPUs",
        "train-lexical": f"train -j 0: mllm starts a pool of {cpus} processes",
        "eval-*": "eval -j 1: one thread (multiprocessing.dummy)",
    }


def annif_version(python: str) -> str:
    """The Annif version installed for `python`."""
    code = "import importlib.metadata as m; print(m.version('annif'))"
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def write_annif_config(workdir: Path) -> Path:
    """projects.cfg with the three English projects on vocabulary `v`."""
    sections = []
    for name, extra in BACKEND_SETTINGS.items():
        settings = {
            "name": name,
            "language": "en",
            "backend": name,
            "analyzer": "snowball(english)",
            "vocab": "v",
            "limit": "100",
            **extra,
        }
        sections.append(
            f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in settings.items())
        )
    cfg = workdir / "projects.cfg"
    cfg.write_text("\n".join(sections))
    return cfg


def stage_commands(data: Path, workdir: Path) -> dict[str, list[str]]:
    """Annif arguments of each stage (names as in scale_stages)."""
    commands = {
        "load-vocab": ["load-vocab", "--force", "v", str(data / "vocab.ttl")],
        "suggest-tfidf": ["suggest", "tfidf"],
    }
    for ours, project in PROJECTS.items():
        commands[f"train-{ours}"] = ["train", project, str(data / "train.tsv")]
        commands[f"eval-{ours}"] = [
            "eval",
            project,
            str(data / "heldout.tsv"),
            "-m",
            "F1@5",
            "--metrics-file",
            str(workdir / f"metrics-{project}.json"),
        ]
    return commands


def run_annif(python: str, workdir: Path, args: list[str], stdin: str | None = None):
    """Run Annif ARGS: (seconds, ru_maxrss MB, sampled tree peak MB, output)."""
    env = {
        **os.environ,
        "ANNIF_PROJECTS": str(workdir / "projects.cfg"),
        "ANNIF_DATADIR": str(workdir / "data"),
    }
    return run_measured([python, str(SHIM), *args], workdir, env, stdin, every=0.2)


def directory_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def measure(python: str, data: Path, workdir: Path, stages: list[str]) -> list[dict]:
    """Run the stages in order: one row each, in scale_stages' shape."""
    commands = stage_commands(data, workdir)
    one_doc = (data / "heldout.tsv").read_text().split("\n", 1)[0].split("\t")[0]
    rows = []
    for stage in stages:
        stdin = one_doc if stage == "suggest-tfidf" else None
        seconds, peak, tree, _ = run_annif(python, workdir, commands[stage], stdin)
        row = {
            "stage": stage,
            "seconds": round(seconds, 1),
            "peak_mb": round(peak),
            "tree_peak_mb": round(tree),
        }
        project = PROJECTS.get(stage.split("-", 1)[1])
        if stage.startswith("train-"):
            row["project"] = project
            row["model_mb"] = round(
                directory_mb(workdir / "data/projects" / project), 1
            )
        if stage.startswith("eval-"):
            row["project"] = project
            metrics = json.loads((workdir / f"metrics-{project}.json").read_text())
            row["F1@5"] = round(float(metrics["F1@5"]), 4)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="S")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path("/tmp/scale-stages"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/scale-annif"))
    parser.add_argument("--annif-python", default="/tmp/annif-venv/bin/python")
    args = parser.parse_args()
    concepts, documents = SIZES[args.size]
    data = (args.data / args.size).resolve()
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "heldout.tsv").is_file():
        generate(data, concepts, documents, args.seed)
    workdir = (args.work / args.size).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    write_annif_config(workdir)
    version = annif_version(args.annif_python)
    rows = measure(args.annif_python, data, workdir, args.stages.split(","))
    previous = RESULTS / f"scale_annif-{args.size}.json"
    if previous.is_file():  # keep stages measured in earlier runs of this size
        kept = {r["stage"]: r for r in json.loads(previous.read_text())["rows"]}
        kept.update({r["stage"]: r for r in rows})
        rows = [kept[s] for s in STAGES if s in kept]
    result = {
        "tool": f"annif {version}",
        "size": args.size,
        "concepts": concepts,
        "documents": documents,
        "annif_jobs": annif_jobs(),
        "rows": rows,
    }
    save_results(f"scale_annif-{args.size}", result)
    columns = ["stage", "project", "seconds", "peak_mb", "tree_peak_mb"]
    print(
        f"## Annif {version}, {args.size}: {concepts} concepts, {documents} documents\n"
    )
    print(markdown_table(rows, [*columns, "model_mb", "F1@5"]))
    print("\nAnnif's default jobs: " + "; ".join(annif_jobs().values()))


if __name__ == "__main__":
    main()
