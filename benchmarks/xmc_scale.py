"""How xmc's training grows with the number of training documents: time and
peak memory of each phase on the first N lines of a training file, held-out
F1@5, and each phase's growth exponent log(t2/t1)/log(n2/n1).

    nice -n 10 python benchmarks/xmc_scale.py --source /tmp/scale-stages/L \\
        --sizes 25000,50000,100000 [--set min_df=2] [--perf] [--tag x]

`--source` is a directory made by `benchmarks/scale_stages.py` (train.tsv,
heldout.tsv and a loaded vocabulary under data/vocabs/v, which is copied, not
reloaded). Each size trains in a fresh process, so its peak resident set
(`ru_maxrss` from `os.wait4`) is its own. Phases, in CPU seconds (a shared
machine's other work slows the clock but not them), timed by wrapping the
functions xmc's training calls: `vectorize` (TfidfFeatures.fit_transform),
`write` (write_libsvm), `omikuji` (train_on_data) and the rest of
`train_cpu_s` (reading the corpus for the subject counts, saving). The
timestamps of omikuji's log split its part (in seconds of the clock) into
`load` (parsing the file), `centroids` (a vector per label) and `trees`
(clustering and classifiers, which interleave; `--perf` samples the child
with `perf record` and lists the functions that took the most CPU time).
omikuji's `tree_structure_only` cannot split them: 0.5.2 panics with it
(train.rs:306). `--threads` is omikuji's n_threads (the CLI's `-j`).

Prints a markdown table and the exponents; writes
benchmarks/results/xmc_scale[-TAG].json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluate, markdown_table, save_results  # noqa: E402

PHASES = ["vectorize", "write", "omikuji", "load", "centroids", "trees"]
COLUMNS = [
    "documents",
    "terms",
    "nnz",
    "subjects",
    "layout",
    *PHASES,
    "train_s",
    "train_cpu_s",
    "peak_mb",
    "F1@5",
]


def subset(source: Path, lines: int, workdir: Path) -> Path:
    """The first `lines` lines of the training file (all of it for 0)."""
    target = workdir / f"train-{lines}.tsv"
    with open(source, encoding="utf-8") as f, open(target, "w") as out:
        for i, line in enumerate(f):
            if lines and i >= lines:
                break
            out.write(line)
    return target


def workspace(source: Path, settings: dict[str, str]) -> Path:
    """A temporary projects.cfg with one xmc project over a copy of the
    source's loaded vocabulary (the source's models are left alone)."""
    work = Path(tempfile.mkdtemp(prefix="xmc-scale-"))
    shutil.copytree(
        (source / "data" / "vocabs" / "v").resolve(), work / "data" / "vocabs" / "v"
    )
    section = {"language": "en", "vocab": "v", "backend": "xmc", **settings}
    (work / "projects.cfg").write_text(
        f"[vocab:v]\nsource = {source / 'vocab.ttl'}\n\n[xmc]\n"
        + "".join(f"{k} = {v}\n" for k, v in section.items())
    )
    return work


def timed(phases: dict, name: str, function):
    """`function`, adding the CPU seconds it takes to `phases[name]` on each
    call (CPU time: other work on a shared machine slows the clock, not it)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.process_time() - started

    return wrapper


# omikuji's own log lines (on stdout) that start its steps
STEPS = {
    "Loading data": "load",
    "Computing label centroids": "centroids",
    "Start training forest": "trees",
    "Model training complete": None,
}


def omikuji_steps(log: str) -> dict[str, float]:
    """Seconds of omikuji's steps, from the timestamps of its log lines:
    `load` (parsing the file), `centroids` (a sparse vector per label) and
    `trees` (clustering the labels and training the classifiers)."""
    from datetime import datetime

    pattern = re.compile(r"^(\S+Z) INFO\s+\[omikuji[^\]]*\] (.*)$")
    marks = []
    for line in log.splitlines():
        found = pattern.match(line.strip())
        if found:
            step = next((s for s in STEPS if found.group(2).startswith(s)), "")
            if step:
                at = datetime.fromisoformat(found.group(1).replace("Z", "+00:00"))
                marks.append((STEPS[step], at.timestamp()))
    return {
        name: round(end - start, 1)
        for (name, start), (_, end) in zip(marks, marks[1:], strict=False)
        if name
    }


def child(args: argparse.Namespace) -> None:
    """Train and evaluate one size in this process; print its row as JSON."""
    import omikuji

    import backends.xmc as xmc
    from indexer.features import TfidfFeatures
    from indexer.project import Projects

    phases: dict[str, float] = {}
    shape = {}
    fit_transform = TfidfFeatures.fit_transform

    def vectorize(self, *a, **k):
        x = fit_transform(self, *a, **k)
        shape.update(terms=x.shape[1], nnz=int(x.nnz))
        return x

    TfidfFeatures.fit_transform = timed(phases, "vectorize", vectorize)
    xmc.write_libsvm = timed(phases, "write", xmc.write_libsvm)
    omikuji.Model.train_on_data = timed(phases, "omikuji", omikuji.Model.train_on_data)
    # omikuji's log (stdout) times its steps; its progress bars go to stderr
    xmc.quiet_native_output = lambda **_: contextlib.nullcontext()

    project = Projects.from_path(args.work / "projects.cfg").get("xmc")
    started, cpu = time.perf_counter(), time.process_time()
    info = project.train([args.train], jobs=args.threads)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    metrics, _, _ = evaluate(project, args.heldout, None)
    row = {
        "documents": info["examples"],
        **shape,
        "subjects": info["subjects"],
        "layout": info["layout"],
        **{p: round(s, 1) for p, s in phases.items()},
        "train_s": round(seconds, 1),
        "train_cpu_s": round(cpu, 1),
        "F1@5": round(metrics["f1@5"], 4),
    }
    print(json.dumps(row), flush=True)


def run_size(args: argparse.Namespace, work: Path, train: Path) -> dict:
    """One size in a child process: its row, with the child's peak memory and
    omikuji's steps (and, with `--perf`, where the child's CPU time went)."""
    command = [sys.executable, __file__, "--child", "--work", str(work)]
    command += ["--train", str(train), "--heldout", str(args.source / "heldout.tsv")]
    command += ["--threads", str(args.threads)]
    if args.perf:
        command = ["perf", "record", "-F", "49", "-o", str(work / "perf.data")] + [
            "--",
            *command,
        ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    log, errors = work / "child.log", work / "child.err"
    with open(log, "w") as out, open(errors, "w") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    text = log.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"training {train} failed:\n{errors.read_text(errors='replace')[-3000:]}"
        )
    row = json.loads(text.strip().splitlines()[-1])
    row = {**row, **omikuji_steps(text), "peak_mb": round(usage.ru_maxrss / 1024)}
    if args.perf:
        row["perf"] = top_symbols(work / "perf.data")
    return row


def top_symbols(data: Path, count: int = 12) -> dict[str, float]:
    """Shares of CPU samples of the most sampled functions (`perf report`)."""
    report = subprocess.run(
        [
            "perf",
            "report",
            "-i",
            str(data),
            "--stdio",
            "--no-children",
            "--sort",
            "symbol",
            "--percent-limit",
            "1",
        ],
        capture_output=True,
        text=True,
    ).stdout
    shares = {}
    for line in report.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].endswith("%") and parts[1] == "[.]":
            shares[parts[2].strip()[:90].rstrip()] = float(parts[0].rstrip("%"))
    return dict(list(shares.items())[:count])


def exponents(rows: list[dict]) -> list[dict]:
    """Growth exponent of each phase between consecutive sizes."""
    out = []
    for a, b in zip(rows, rows[1:], strict=False):
        ratio = math.log(b["documents"] / a["documents"])
        grown = {"from": a["documents"], "to": b["documents"]}
        for key in (
            "nnz",
            "subjects",
            "terms",
            *PHASES,
            "train_s",
            "train_cpu_s",
            "peak_mb",
        ):
            if a.get(key) and b.get(key):
                grown[key] = round(math.log(b[key] / a[key]) / ratio, 2)
        out.append(grown)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=Path("/tmp/scale-stages/L"))
    parser.add_argument("--sizes", default="25000,50000,100000", help="0: all")
    parser.add_argument("--set", action="append", default=[], help="xmc param=value")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--perf", action="store_true", help="profile with perf")
    parser.add_argument("--tag", default="")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--heldout", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    settings = dict(item.split("=", 1) for item in args.set)
    rows = []
    for size in map(int, args.sizes.split(",")):
        work = workspace(args.source.resolve(), settings)
        try:
            train = subset(args.source / "train.tsv", size, work)
            rows.append(run_size(args, work, train))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    growth = exponents(rows)
    save_results(
        "xmc_scale",
        {
            "source": str(args.source),
            "settings": settings,
            "rows": rows,
            "exponents": growth,
            "threads": args.threads,
        },
        args.tag,
    )
    print(markdown_table(rows, [c for c in COLUMNS if any(c in r for r in rows)]))
    if growth:
        print("\n## growth exponents (~ documents^e)\n")
        print(markdown_table(growth, list(growth[-1])))


if __name__ == "__main__":
    main()
