"""Time and peak memory of `indexer load-vocab` on a large synthetic vocabulary:
the first load and a reload (which merges with the stored version).

    nice -n 10 python benchmarks/load_vocab_scale.py --concepts 1000000

The vocabulary is benchmarks/scale_stages.py's (seeded SKOS Turtle: a
prefLabel, 0-2 altLabels and a broader concept each), written once under
--work. Each load is a fresh `python -m indexer load-vocab` process, timed
from start to exit; its CPU seconds (user and system, the parse child's
included) say how much of that was work on a machine others share. Peak
memory is given twice: the largest process's
resident set (the command or its parse child, from `os.wait4`, as
`/usr/bin/time -v` counts it), and the largest sum of the two, sampled from
/proc every 0.1 s. The goal: a million concepts in at most 60 s and 2 GB.
Writes benchmarks/results/load_vocab_scale-CONCEPTS.json.
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
from common import TreePeak, markdown_table, save_results  # noqa: E402
from scale_stages import generate  # noqa: E402

SAMPLE_SECONDS = 0.1


def load(workdir: Path, source: Path) -> dict:
    """Run one `indexer load-vocab`: seconds, CPU seconds, and the largest
    process's and the summed peak resident set (MB)."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cfg = workdir / "projects.cfg"
    cfg.write_text(f"[indexer]\ndata_dir = {workdir / 'data'}\n")
    command = [sys.executable, "-m", "indexer", "--projects", str(cfg)]
    started = time.perf_counter()
    child = subprocess.Popen(
        [*command, "load-vocab", "v", str(source)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    with TreePeak(child.pid, every=SAMPLE_SECONDS) as peak:
        output = child.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"load-vocab failed:\n{output[-3000:]}")
    return {
        "seconds": round(seconds, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_mb": round(usage.ru_maxrss / 1024),
        "peak_sum_mb": round(peak.bytes / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concepts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/load-vocab-scale"))
    parser.add_argument("--tag", default="", help="results file suffix")
    args = parser.parse_args()
    workdir = (args.work / str(args.concepts)).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "vocab.ttl"
    if not source.is_file():
        started = time.perf_counter()
        generate(workdir, args.concepts, 0, args.seed)
        print(f"generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    shutil.rmtree(workdir / "data", ignore_errors=True)
    load_average = os.getloadavg()[0]
    rows = [{"stage": stage, **load(workdir, source)} for stage in ("load", "reload")]
    result = {
        "concepts": args.concepts,
        "source_mb": round(source.stat().st_size / 2**20),
        "load_average_before": round(load_average, 2),
        "rows": rows,
    }
    save_results(f"load_vocab_scale-{args.concepts}", result, args.tag)
    print(f"## load-vocab, {args.concepts} concepts ({result['source_mb']} MB)\n")
    print(markdown_table(rows, ["stage", "seconds", "cpu_s", "peak_mb", "peak_sum_mb"]))


if __name__ == "__main__":
    main()
