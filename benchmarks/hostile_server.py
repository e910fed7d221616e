"""The model-server client against servers that misbehave on purpose: time
to the error and peak memory (RSS) of the client, which runs in a process of
its own for each case. The servers run here, on loopback ports.

    python benchmarks/hostile_server.py            # the client installed
    PYTHONPATH=/tmp/old python benchmarks/hostile_server.py   # another one

Cases (the client is ChatClient with timeout = 2, retries = 1, as the settings
of a reported run):
  drip       an answer of 200 bytes, one byte every 0.5 s
  huge       a 300 MiB answer (no Content-Length) to max_tokens = 8
  redirect   a 302 to another port; does the key go there?
  nested     an answer of 100000 "["
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import resource
import subprocess
import sys
import threading
import time

KEY = "TOPSECRETLLMKEY"
CHAT = {"choices": [{"message": {"role": "assistant", "content": "astronomy"}}]}
LIMIT = 60  # seconds a client may take before it is killed


def child(url: str) -> None:
    """Ask `url` once, as llm_generate asks, and print what happened as JSON."""
    from indexer.neural.chat import ChatClient
    from indexer.neural.http import ModelServer

    client = ChatClient(ModelServer(url, KEY, 2.0, 1), "m", 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    try:
        answer = client.complete([[{"role": "user", "content": "Hi"}]], 8)
        outcome = f"answered {answer[0][:60]!r}"
    except Exception as exc:  # noqa: BLE001 - what the client raised is the result
        outcome = f"{type(exc).__name__}: {str(exc)[:160]}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = round(time.monotonic() - started, 2)
    grew = round((peak - before) / 1024)
    print(json.dumps({"seconds": seconds, "rss_grew_mib": grew, "outcome": outcome}))


class Server:
    """A loopback server answering every request with `respond(handler)`."""

    def __init__(self, respond):
        self.seen = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server hook
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen.append(f"{self.command} {self.headers.get('Authorization')}")
                with contextlib.suppress(OSError):  # the client hung up
                    respond(self)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def drip(handler) -> None:
    body = json.dumps(CHAT).encode().ljust(200)
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    for byte in body:
        handler.wfile.write(bytes([byte]))
        time.sleep(0.5)


def huge(handler) -> None:
    block = b" " * 2**20
    handler.send_response(200)
    handler.end_headers()  # no length: read until the server closes
    handler.wfile.write(json.dumps(CHAT).encode()[:-1])
    for _ in range(300):
        handler.wfile.write(block)


def nested(handler) -> None:
    body = b"[" * 100000
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def run(url: str) -> dict:
    command = [sys.executable, __file__, "--child", url]
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=LIMIT)
    except subprocess.TimeoutExpired:
        return {"seconds": f">{LIMIT} (killed)", "outcome": "no error"}
    if done.returncode:
        last = done.stderr.strip().splitlines()[-1:] or ["?"]
        took = round(time.monotonic() - started, 2)
        return {"seconds": took, "outcome": f"crashed: {last[0][:160]}"}
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cases", default="drip,huge,redirect,nested")
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    for case in args.cases.split(","):
        if case == "redirect":
            other = Server(lambda h: _answer(h, json.dumps(CHAT).encode()))
            target = other.url + "/v1/chat/completions"
            server = Server(lambda h, target=target: _redirect(h, target))
        else:
            other, server = None, Server({"drip": drip, "huge": huge}.get(case, nested))
        result = run(server.url)
        if other is not None:
            result["other_host_saw"] = other.seen
        print(json.dumps({"case": case, **result}), flush=True)


def _answer(handler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _redirect(handler, location: str) -> None:
    handler.send_response(302)
    handler.send_header("Location", location)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


if __name__ == "__main__":
    main()
