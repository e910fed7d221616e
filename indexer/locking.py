"""Locks that keep two writers off one project or vocabulary.

A lock is an `fcntl.flock` on a file under `data/locks/`. The kernel releases
it when its holder exits, however it exits (kill -9 included), so a lock is
never left stale. While held, the file names the holder (pid, the program and
its subcommand, since when), which the refusal message of a second writer
shows. It never holds the rest of the command line: option values may be
secrets (`indexer serve --api-key ...`), and the file is readable by its owner
only.

Locks are re-entrant within a thread (a training that also writes a cache takes
the project's lock once) and exclusive between threads and processes.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from indexer.errors import BusyError

_HELD = threading.local()
#: what the lock file calls this process: see name_command
_COMMAND: list[str] = []
#: seconds between tries while a bounded wait (`timeout`) polls a busy lock
POLL_INTERVAL = 0.01


class ResourceLock:
    """The lock of one resource (`what` names it in messages, e.g. "Project 'x'")."""

    def __init__(self, path: Path, what: str):
        self.path = Path(path)
        self.what = what

    @classmethod
    def for_project(cls, data_dir: Path, project_id: str) -> ResourceLock:
        """Held while a project's model is trained, updated or cleared."""
        return cls(
            Path(data_dir) / "locks" / f"project-{project_id}.lock",
            f"Project '{project_id}'",
        )

    @classmethod
    def for_vocabulary(cls, data_dir: Path, vocab_id: str) -> ResourceLock:
        """Held while a vocabulary is (re)loaded."""
        return cls(
            Path(data_dir) / "locks" / f"vocab-{vocab_id}.lock",
            f"Vocabulary '{vocab_id}'",
        )

    @contextmanager
    def hold(
        self,
        wait: bool = False,
        on_wait: Callable[[str], None] | None = None,
        timeout: float | None = None,
    ) -> Iterator[None]:
        """Hold the lock for the block; a busy lock raises BusyError at once,
        with `wait` is waited for (`on_wait`, default stderr, is told whom for),
        or with `timeout` is waited for silently up to that many seconds."""
        held = _held_here()
        key = str(self.path)
        if key in held:  # this thread holds it already: keep it
            yield
            return
        if timeout is not None:
            fd = self._acquire_within(timeout)
        else:
            fd = self._acquire(wait, on_wait)
        held[key] = fd
        try:
            yield
        finally:
            del held[key]
            os.ftruncate(fd, 0)
            os.close(fd)  # closing releases the flock

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with suppress(OSError):  # a file made before locks were private
            os.fchmod(fd, 0o600)
        return fd

    def _acquire_within(self, timeout: float) -> int:
        """The lock, tried until `timeout` seconds have passed (flock itself
        cannot give up); BusyError then."""
        fd = self._open()
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise BusyError(
                            f"{self.what} is busy: {self.holder()}; waited "
                            f"{timeout:g} s for it",
                            resource=self.what,
                        ) from None
                    time.sleep(POLL_INTERVAL)
            _write_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _acquire(self, wait: bool, on_wait) -> int:
        fd = self._open()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self.holder()
                if not wait:
                    raise BusyError(
                        f"{self.what} is busy: {holder}. Wait for it to finish, "
                        "or run again with --wait",
                        resource=self.what,
                    ) from None
                (on_wait or _print_to_stderr)(f"Waiting: {self.what} is busy: {holder}")
                fcntl.flock(fd, fcntl.LOCK_EX)
            _write_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def holder(self) -> str:
        """Who holds the lock, in words (read from the lock file)."""
        for _ in range(20):  # the holder writes its name just after locking
            try:
                info = json.loads(self.path.read_text() or "null")
            except (OSError, ValueError):
                info = None
            if info:
                return (
                    f"process {info['pid']} ({info['command']}) has held it "
                    f"since {info['since']}"
                )
            time.sleep(0.05)
        return "another process holds it"


def _print_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _held_here() -> dict[str, int]:
    """The locks the calling thread holds: path -> file descriptor."""
    return _HELD.__dict__.setdefault("locks", {})


def _write_holder(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "command": _command(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


def name_command(command: str | None) -> None:
    """Name this process in the lock files it writes (the CLI: `indexer train`):
    a program and a subcommand, never option values; None: the program's name."""
    _COMMAND[:] = [command] if command else []


def _command() -> str:
    """The running program (and subcommand, where the CLI named it), without
    its arguments: `indexer train`, `pytest`, `script.py`."""
    if _COMMAND:
        return _COMMAND[0]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None:  # python -m package
        module = spec.name.removesuffix(".__main__")
        return "indexer" if module == "indexer.cli" else module
    program = Path(sys.argv[0]).name if sys.argv else ""
    return "python" if program in ("", "-c", "-") else program
