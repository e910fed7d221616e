"""llm_rank (engine = systemone) against `transformers serve` with the
packaged SmolLM2-135M on this machine, with the server's default settings
(timeout = 60, concurrency = 4, retries = 2), as a user runs it from the CLI:
train on 60 documents of the demo vocabulary, suggest, then stop the server
and suggest again. Prints the seconds of each step, what suggest printed,
and the error once the server is gone.

    nice -n 10 python benchmarks/busy_server.py [--docs 60] [--busy 1]
        [--set timeout=900 --set candidates=10 ...]

`--busy N` runs N processes that keep a core busy meanwhile (other jobs on
a shared machine); the documents are examples/tutorial/train.tsv and
validate.tsv, repeated to `--docs`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.model_servers import transformers_serve  # noqa: E402

TEXT = ROOT / "vocabularies" / "examples" / "solar-power.txt"
CONFIG = """
[vocab:disciplines]
source = {root}/vocabularies/disciplines.ttl

[rank-local]
language = en
vocab = disciplines
backend = llm_rank
model = {model}
answer_forms = exact

[rank]
language = en
vocab = disciplines
backend = llm_rank
engine = systemone
url = {url}
model = {model}
"""


def cli(workdir: Path, *args: str) -> tuple[float, int, str, str]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "--projects", "projects.cfg", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    took = round(time.monotonic() - started, 1)
    return took, done.returncode, done.stdout, done.stderr


def spin() -> None:
    while True:
        pass


def corpus(path: Path, docs: int) -> None:
    tutorial = ROOT / "examples" / "tutorial"
    lines = [
        line
        for name in ("train.tsv", "validate.tsv")
        for line in (tutorial / name).read_text().splitlines()
        if line.strip()
    ]
    path.write_text("\n".join((lines * (docs // len(lines) + 1))[:docs]) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=60)
    parser.add_argument("--busy", type=int, default=1)
    parser.add_argument(
        "--set", action="append", default=[], help="KEY=VALUE for the served project"
    )
    args = parser.parse_args()
    from indexer.neural.models import resolve_model

    model = resolve_model("smollm2").path
    workdir = Path(tempfile.mkdtemp(prefix="busy-server-"))
    cfg = workdir / "projects.cfg"
    config = CONFIG + "".join(
        f"{setting.replace('=', ' = ', 1)}\n" for setting in args.set
    )
    cfg.write_text(config.format(root=ROOT, model=model, url="http://127.0.0.1:1"))
    corpus(workdir / "train.tsv", args.docs)
    _, code, decision, err = cli(workdir, "decision-config", "rank-local")
    assert code == 0, err
    (workdir / "decision.json").write_text(decision)
    spinners = [multiprocessing.Process(target=spin) for _ in range(args.busy)]
    for process in spinners:
        process.start()
    report = {"docs": args.docs, "busy_processes": args.busy, "set": args.set}
    try:
        started = time.monotonic()
        with transformers_serve(model, workdir / "decision.json", timeout=300) as url:
            report["server_start_s"] = round(time.monotonic() - started, 1)
            cfg.write_text(config.format(root=ROOT, model=model, url=url))
            took, code, _, err = cli(workdir, "train", "rank", "train.tsv")
            report["train"] = {"s": took, "exit": code, "stderr": err[-600:]}
            took, code, out, err = cli(workdir, "suggest", "rank", str(TEXT))
            report["suggest"] = {
                "s": took,
                "exit": code,
                "concepts": len(out.splitlines()),
                "stdout": out,
                "stderr": err[-400:],
            }
        took, code, out, err = cli(workdir, "suggest", "rank", str(TEXT))
        report["suggest_server_gone"] = {"s": took, "exit": code, "stderr": err[-600:]}
    finally:
        for process in spinners:
            process.terminate()
        with contextlib.suppress(Exception):
            for process in spinners:
                process.join(5)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
