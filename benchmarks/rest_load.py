"""REST load benchmark: concurrent clients on loopback against `indexer serve`.

Trains a tfidf project on yso-kirjastonhoitaja in a temporary workspace (the
repository's demo projects beside it), starts the real server (`indexer serve`,
waitress or gunicorn) in a subprocess, and for each project and client count
sends ~3 kB documents as fast as the clients can for a bounded time. Prints
requests/s, latency percentiles, errors and the memory of the worker
processes: resident (RSS, pages shared between workers counted in each) and
proportional (PSS, shared pages divided among the processes that share them;
summed over the workers and gunicorn's master, it is what the server really
takes).

    python benchmarks/rest_load.py [--clients 8] [--seconds 15]
        [--servers waitress:1x4,gunicorn:1x4,gunicorn:2x4,gunicorn:4x4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, ROOT, markdown_table, save_results  # noqa: E402

DOC_BYTES = 3000
DATASET = DATASETS / "yso-kirjastonhoitaja"
TFIDF_CFG = f"""
[vocab:yso]
source = {DATASET / "vocab.ttl"}

[tfidf-fi]
name = YSO TF-IDF (Finnish)
language = fi
vocab = yso
backend = tfidf
"""


def write_workspace(workdir: Path) -> Path:
    """projects.cfg: the tfidf project plus the repository's own projects."""
    own = (ROOT / "projects.cfg").read_text()
    own = re.sub(
        r"^(source\s*=\s*)(?!/)(.+)$",
        lambda m: m.group(1) + str(ROOT / m.group(2).strip()),
        own,
        flags=re.M,
    )
    path = workdir / "projects.cfg"
    path.write_text(TFIDF_CFG + "\n" + own)
    return path


def trim(text: str, size: int = DOC_BYTES) -> str:
    """The first words of `text` adding up to about `size` bytes of UTF-8."""
    words, total = [], 0
    for word in text.split():
        total += len(word.encode()) + 1
        if total > size:
            break
        words.append(word)
    return " ".join(words)


def finnish_documents(count: int = 50) -> list[str]:
    """Distinct ~3 kB documents: the long ones of the validation split, then of
    the training split (speed does not depend on whether a text was seen)."""
    texts = []
    for split in ("validate.tsv", "train.tsv"):
        with open(DATASET / split, encoding="utf-8") as f:
            for line in f:
                text = line.split("\t")[0]
                if len(text.encode()) >= DOC_BYTES:
                    texts.append(trim(text))
                if len(texts) == count:
                    return texts
    return texts


def english_documents() -> list[str]:
    """~3 kB English documents: the two examples, paragraphs in several orders."""
    paragraphs = []
    for name in ("solar-power.txt", "medieval-trade.txt"):
        text = (ROOT / "vocabularies" / "examples" / name).read_text()
        paragraphs += [p for p in text.split("\n\n") if p.strip()]
    return [
        trim(" ".join(paragraphs[i:] + paragraphs[:i])) for i in range(len(paragraphs))
    ]


def start_server(
    config: Path, kind: str, workers: int, threads: int
) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-c",
        "from indexer.cli import main; main()",
        "--projects",
        str(config),
        "serve",
        "--port",
        "0",
        "--threads",
        str(threads),
        "--workers",
        str(workers),
        "--server",
        kind,
    ]
    server = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, cwd=config.parent
    )
    log = []
    for line in server.stderr:
        log.append(line)
        found = re.search(r"on (http://[\d.]+:\d+)/", line)
        if found:
            # keep draining the log so the server never blocks on a full pipe
            threading.Thread(
                target=lambda: [None for _ in server.stderr], daemon=True
            ).start()
            return server, found.group(1)
    raise RuntimeError("The server did not start:\n" + "".join(log))


def worker_pids(server: int) -> list[int]:
    """The processes that answer requests: the server's children where it
    forked workers, else the server itself."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == server:
            children.append(int(stat.parent.name))
    return sorted(children) or [server]


def memory_mb(server: int) -> dict:
    """Mean RSS per worker, and PSS summed over the workers and a forking
    server's master (which holds the models it loaded before the fork), in
    MB (Linux)."""
    workers = worker_pids(server)
    rss, pss = [], []
    for pid in sorted({*workers, server}):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        values = {
            line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:]
        }
        if pid in workers:
            rss.append(values.get("Rss", 0) / 1024)
        pss.append(values.get("Pss", 0) / 1024)
    if not rss:
        return {"RSS MB/worker": "", "PSS MB total": ""}
    return {
        "RSS MB/worker": round(statistics.mean(rss)),
        "PSS MB total": round(sum(pss)),
    }


def warm_up(base: str, project: str, docs: list[str], count: int) -> None:
    """Sequential requests first, each on a new connection so that every
    worker process gets some: models, caches and stems get warm."""
    host, port = base.removeprefix("http://").split(":")
    for i in range(count):
        connection = http.client.HTTPConnection(host, int(port), timeout=300)
        body = json.dumps({"text": docs[i % len(docs)]}).encode()
        connection.request(
            "POST",
            f"/v1/projects/{project}/suggest",
            body,
            {"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        data = response.read()
        connection.close()
        if response.status != 200:
            sys.exit(f"{project}: {response.status} {data[:300]!r}")


def load(
    base: str, project: str, docs: list[str], clients: int, seconds: float
) -> dict:
    """`clients` keep-alive connections posting documents for `seconds`."""
    host, port = base.removeprefix("http://").split(":")
    path = f"/v1/projects/{project}/suggest"
    bodies = [json.dumps({"text": d}).encode() for d in docs]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    server_ms: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(k: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        start.wait()
        i = k
        while time.perf_counter() < deadline[0]:
            body = bodies[i % len(bodies)]
            i += clients
            began = time.perf_counter()
            try:
                connection.request(
                    "POST", path, body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                data = response.read()
                elapsed = time.perf_counter() - began
                if response.status != 200 or "results" not in json.loads(data):
                    errors[k] += 1
                    continue
            except (OSError, http.client.HTTPException, ValueError):
                errors[k] += 1
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=60)
                continue
            latencies[k].append(elapsed)
            timing = response.getheader("Server-Timing", "")
            found = re.search(r"dur=([\d.]+)", timing)
            if found:
                server_ms[k].append(float(found.group(1)))
        connection.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    all_latencies = sorted(x for part in latencies for x in part)
    all_server = [x for part in server_ms for x in part]
    n = len(all_latencies)

    def pct(q: float) -> float:
        return round(1000 * all_latencies[min(n - 1, int(q * n))], 1) if n else 0.0

    return {
        "project": project,
        "clients": clients,
        "requests": n,
        "req/s": round(n / wall, 1),
        "p50 ms": pct(0.50),
        "p90 ms": pct(0.90),
        "p99 ms": pct(0.99),
        "server p50 ms": round(statistics.median(all_server), 1) if all_server else "",
        "errors": sum(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="8", help="client counts to run")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=int, default=30, help="requests per project")
    parser.add_argument(
        "--servers",
        default="waitress:1x4,gunicorn:1x4,gunicorn:2x4,gunicorn:4x4",
        help="server set-ups to run, as SERVER:WORKERSxTHREADS (default: indexer "
        "serve's waitress with 4 threads, and gunicorn with 1, 2 and 4 workers)",
    )
    parser.add_argument("--projects", default="tfidf-fi,demo")
    args = parser.parse_args()
    if not DATASET.exists():
        sys.exit(f"Dataset {DATASET} not found (set INDEXER_DATASETS)")
    documents = {"tfidf-fi": finnish_documents()}
    with tempfile.TemporaryDirectory() as tmp:
        config = write_workspace(Path(tmp))
        print("Training tfidf-fi ...", file=sys.stderr, flush=True)
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from indexer.cli import main; main()",
                "--projects",
                str(config),
                "train",
                "tfidf-fi",
                str(DATASET / "train.tsv"),
            ],
            check=True,
        )
        rows = []
        for setup in args.servers.split(","):
            kind, _, shape = setup.rpartition(":")
            kind = kind or "waitress"
            workers, threads = map(int, shape.split("x"))
            server, base = start_server(config, kind, workers, threads)
            try:
                for project in args.projects.split(","):
                    docs = documents.get(project) or english_documents()
                    size = statistics.mean(len(d.encode()) for d in docs)
                    print(
                        f"{project}: {len(docs)} documents of ~{size:.0f} bytes, "
                        f"{workers} workers x {threads} threads",
                        file=sys.stderr,
                        flush=True,
                    )
                    warm_up(base, project, docs, args.warmup * workers)
                    for clients in map(int, args.clients.split(",")):
                        row = load(base, project, docs, clients, args.seconds)
                        memory = memory_mb(server.pid)
                        row = {"server": f"{kind} {workers}x{threads}", **row}
                        row.update(memory)
                        print(row, flush=True)
                        rows.append(row)
            finally:
                server.terminate()
                server.wait(30)
    columns = list(rows[0])
    print(markdown_table(rows, columns))
    save_results("rest_load", {"document_bytes": DOC_BYTES, "rows": rows})


if __name__ == "__main__":
    main()
