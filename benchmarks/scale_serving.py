"""Batch indexing and a server's memory at catalogue scale, on the models that
scale_stages.py trained.

    nice -n 10 python benchmarks/scale_serving.py --size M [--documents 100000]

Two stages for each project (tfidf, xmc, lexical) of the size's workspace
(/tmp/scale-stages/SIZE, trained by scale_stages.py first):

- `index`: `indexer index PROJECT records.jsonl --output OUT.jsonl` of
  `--documents` records (the held-out and training texts, repeated), `-j 2`:
  wall seconds, documents/s, and the peak of the process tree's summed
  resident set (sampled every 0.2 s).
- `serve`: `indexer serve --workers 2` (gunicorn, the models loaded before
  the workers fork), a suggest request to every project until each worker
  answered one, then each worker's proportional set size (PSS: shared pages
  divided among the processes sharing them) and unique set size (USS: what
  the worker alone holds). A memory-mapped model is shared; a copied one
  shows up in USS.

Writes benchmarks/results/scale_serving-SIZE.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TreePeak, markdown_table, save_results  # noqa: E402

PROJECTS = ("tfidf", "xmc", "lexical")
WORKERS = 2


def write_records(workdir: Path, documents: int) -> Path:
    """`documents` JSONL records cycling through the workspace's texts."""
    path = workdir / f"records-{documents}.jsonl"
    if path.is_file():
        return path
    texts = []
    for name in ("heldout.tsv", "train.tsv"):
        with open(workdir / name, encoding="utf-8") as f:
            texts += [line.split("\t", 1)[0] for line in f if line.strip()]
            if len(texts) >= documents:
                break
    with open(path, "w", encoding="utf-8") as out:
        for i in range(documents):
            record = {"id": f"r{i}", "text": texts[i % len(texts)]}
            out.write(json.dumps(record) + "\n")
    return path


def indexer_command(cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "indexer", "--projects", str(cfg), *args]


def measure_index(workdir: Path, cfg: Path, project: str, records: Path) -> dict:
    output = workdir / f"indexed-{project}.jsonl"
    command = indexer_command(
        cfg, "index", project, str(records), "--output", str(output), "--force"
    )
    env = {**os.environ, "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    child = subprocess.Popen(
        [*command, "-j", str(WORKERS)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    with TreePeak(child.pid) as peak:
        _, err = child.communicate()
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"index {project} failed:\n{err.decode()[-2000:]}")
    with open(records, encoding="utf-8") as f:
        documents = sum(1 for _ in f)
    return {
        "stage": f"index-{project}",
        "documents": documents,
        "seconds": round(seconds, 1),
        "docs_per_s": round(documents / seconds),
        "tree_peak_mb": round(peak.bytes / 2**20),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, project: str, text: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/projects/{project}/suggest",
        data=json.dumps({"text": text, "limit": 5}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.load(answer)


def wait_ready(port: int, server: subprocess.Popen, seconds: float = 600) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        if server.poll() is not None:
            raise SystemExit("the server exited before it was ready")
        with contextlib.suppress(OSError):
            url = f"http://127.0.0.1:{port}/v1/ready"
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return time.perf_counter() - started
        time.sleep(0.5)
    raise SystemExit("the server was not ready in time")


def measure_serving(workdir: Path, cfg: Path, text: str) -> list[dict]:
    import psutil

    port = free_port()
    command = indexer_command(
        cfg, "serve", "--port", str(port), "--workers", str(WORKERS)
    )
    with open(workdir / "serve.log", "w") as log:
        server = subprocess.Popen(
            [*command, "--metrics", "off"],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TQDM_DISABLE": "1"},
        )
    try:
        ready = wait_ready(port, server)
        # enough requests that every worker loads and uses every model
        for _ in range(8 * WORKERS):
            for project in PROJECTS:
                post(port, project, text)
        workers = psutil.Process(server.pid).children(recursive=True)
        if len(workers) < WORKERS:
            raise SystemExit(f"{len(workers)} workers, not {WORKERS}: see serve.log")
        rows = []
        for process in [psutil.Process(server.pid), *workers]:
            info = process.memory_full_info()
            rows.append(
                {
                    "process": "main" if process.pid == server.pid else "worker",
                    "rss_mb": round(info.rss / 2**20),
                    "pss_mb": round(info.pss / 2**20),
                    "uss_mb": round(info.uss / 2**20),
                }
            )
        rows[0]["ready_s"] = round(ready, 1)
        return rows
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(30)
        if server.poll() is None:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="M")
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/scale-stages"))
    parser.add_argument("--stages", default="index,serve")
    parser.add_argument(
        "--index-projects", default=",".join(PROJECTS), help="projects to index with"
    )
    args = parser.parse_args()
    workdir = (args.work / args.size).resolve()
    cfg = workdir / "projects.cfg"
    if not cfg.is_file():
        raise SystemExit(f"no workspace in {workdir}: run scale_stages.py first")
    stages = args.stages.split(",")
    result = {"size": args.size, "workers": WORKERS}
    if "index" in stages:
        records = write_records(workdir, args.documents)
        result["index"] = [
            measure_index(workdir, cfg, project, records)
            for project in args.index_projects.split(",")
        ]
        print(markdown_table(result["index"], list(result["index"][0])))
    if "serve" in stages:
        text = (workdir / "heldout.tsv").read_text().split("\n", 1)[0].split("\t")[0]
        result["serve"] = measure_serving(workdir, cfg, text)
        columns = ["process", "rss_mb", "pss_mb", "uss_mb", "ready_s"]
        print(markdown_table(result["serve"], columns))
    save_results(f"scale_serving-{args.size}", result)


if __name__ == "__main__":
    main()
