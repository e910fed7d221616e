"""Online learning on a calibrated fusion over REST: does the model, or a
learn's latency, grow with the number of learns?

Splits yso-archaeology's train.tsv by line (sources 6, tuning 1, learning 3
parts of 10; the test split is never read), trains tfidf and lexical on the
first part and a calibrated fusion of the two on the tuning part, starts the
real server (`indexer serve`, waitress) and posts one document per
`POST /v1/projects/fusion/learn`, sequentially, `--learns` times. Prints the
model's size on disk (heldout.npz and in all), the learn latency and the
server's CPU seconds per learn (medians of 20 learns; the CPU time is what a
busy, shared machine does not inflate) at the start and at checkpoints.

    python benchmarks/learn_growth.py [--learns 1000] [--window 200]
        [--tune-documents 300]

`--window` is the fusion's learn_window: learnt documents kept for refitting
(the size and time stop growing once it is full; the default of the backend
is 2000).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, markdown_table, save_results, split_lines  # noqa: E402
from rest_load import start_server  # noqa: E402

DATASET = DATASETS / "yso-archaeology"
PARTS = (("sources", 6), ("tune", 1), ("learn", 3))


def config(workdir: Path, window: int) -> Path:
    path = workdir / "projects.cfg"
    path.write_text(
        f"[vocab:yso]\nsource = {DATASET / 'vocab.ttl'}\n\n"
        "[tfidf]\nlanguage = fi\nvocab = yso\nbackend = tfidf\n\n"
        "[lexical]\nlanguage = fi\nvocab = yso\nbackend = lexical\n\n"
        "[fusion]\nlanguage = fi\nvocab = yso\nbackend = calibrated\n"
        f"sources = tfidf, lexical\nlearn_window = {window}\nallow_learn = true\n"
    )
    return path


def indexer(cfg: Path, *args: str) -> None:
    command = [sys.executable, "-m", "indexer", "--projects", str(cfg), *args]
    subprocess.run(command, check=True, cwd=cfg.parent, stdout=subprocess.DEVNULL)


def learn_records(path: Path) -> list[dict]:
    """The REST learn body of each line of a TSV: text and subject URIs."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text, _, subjects = line.partition("\t")
        uris = [s.strip("<>") for s in subjects.split()]
        if text.strip() and uris:
            records.append({"text": text, "subjects": [{"uri": u} for u in uris]})
    return records


def model_size(workdir: Path) -> dict:
    version = (workdir / "data" / "projects" / "fusion" / "model").resolve()
    files = {f.name: f.stat().st_size for f in version.rglob("*") if f.is_file()}
    return {
        "heldout.npz MB": files.get("heldout.npz", 0) / 1e6,
        "model MB": sum(files.values()) / 1e6,
        "manifest kB": files.get("manifest.json", 0) / 1e3,
    }


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux): a learn's cost
    that other work on a shared machine does not inflate, as it does latency."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post_learn(base: str, record: dict) -> float:
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=600)
    started = time.perf_counter()
    connection.request(
        "POST",
        "/v1/projects/fusion/learn",
        json.dumps([record]).encode(),
        {"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    body = response.read()
    seconds = time.perf_counter() - started
    connection.close()
    if response.status != 204:
        sys.exit(f"learn: {response.status} {body[:500]!r}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learns", type=int, default=1000)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--tune-documents", type=int, default=300)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cfg = config(workdir, args.window)
        split = split_lines(DATASET / "train.tsv", workdir, PARTS)
        tune = workdir / "tune.tsv"
        lines = split["tune"].read_text(encoding="utf-8").splitlines(True)
        tune.write_text("".join(lines[: args.tune_documents]), encoding="utf-8")
        started = time.perf_counter()
        indexer(cfg, "train", "tfidf", str(split["sources"]))
        indexer(cfg, "train", "lexical", str(split["sources"]))
        indexer(cfg, "train", "fusion", str(tune))
        print(f"trained in {time.perf_counter() - started:.0f} s", file=sys.stderr)

        records = learn_records(split["learn"])
        checkpoints = sorted({1, 20, 100, 200, 500, args.learns} - {0})
        rows, latencies, cpu = [], [], []
        server, base = start_server(cfg, "waitress", 1, 4)
        try:
            rows.append({"learns": 0, **model_size(workdir)})
            for i in range(args.learns):
                before = cpu_seconds(server.pid)
                latencies.append(post_learn(base, records[i % len(records)]))
                cpu.append(cpu_seconds(server.pid) - before)
                if i + 1 in checkpoints:
                    recent = latencies[-20:]
                    rows.append(
                        {
                            "learns": i + 1,
                            **model_size(workdir),
                            "learn s (median of last 20)": statistics.median(recent),
                            "learn s (max of last 20)": max(recent),
                            "server CPU s (median of last 20)": statistics.median(
                                cpu[-20:]
                            ),
                        }
                    )
                    print(rows[-1], file=sys.stderr, flush=True)
        finally:
            server.terminate()
            server.wait(30)
    columns = [
        "learns",
        "heldout.npz MB",
        "model MB",
        "manifest kB",
        "learn s (median of last 20)",
        "learn s (max of last 20)",
        "server CPU s (median of last 20)",
    ]
    print(markdown_table(rows, columns))
    save_results("learn_growth", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
