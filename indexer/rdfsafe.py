"""Parse RDF from files nobody vetted: offline, bounded, within a budget.

Vocabulary files may come from outside, so parsing one must not
- reach the network: a JSON-LD `@context` that is a URL is refused before
  parsing, and any other attempt to open a URL or a socket while parsing
  (rdflib follows some references by itself) is stopped by an audit hook;
- expand XML entities without bound: RDF/XML entity declarations are
  checked first; external and parameter entities, entities that refer to
  other entities (the "billion laughs") and long ones are refused, so
  expansion stays linear in the file size;
- run without limit: the file size, the parse time and the parse's memory
  have a budget (`INDEXER_VOCAB_MAX_MB`, default 4096, refused before
  parsing; `INDEXER_VOCAB_MAX_SECONDS`, default 1800, and
  `INDEXER_VOCAB_MAX_MEMORY_MB`, default 16384 or the machine's memory or
  the container's (cgroup) memory limit if that is less). Time and memory
  are hard bounds: the parse runs in a child process with that much address
  space (`RLIMIT_AS`), which is killed at the deadline, so they hold also
  when a parser spends its time or memory inside one token (a long literal,
  `\\u` escapes, entity expansion) where no triple arrives to be counted.
  Only small files that cannot be hostile that way are parsed in-process
  (see `_in_process`).

The parse hands each statement to a collector (`parse_rows`), which keeps
only what it needs, instead of building a graph. Turtle, N-Triples, N-Quads
and TriG are parsed with pyoxigraph where it is installed (the `oxigraph`
extra: a streaming parser in Rust, offline, ten times faster than rdflib);
a file it refuses, or whose language tags it would lower-case, is parsed
again with rdflib, so that rdflib's reading and errors decide. Setting
`INDEXER_VOCAB_PARSER=rdflib` uses rdflib for every format.

Every way a file can be over a budget or too deeply nested is one InputError
with a one-line message naming the setting to raise or what to change. What
the parse prints is bounded too: rdflib's warnings (one per badly typed
literal) are counted and logged as one, and of the child's stderr the parent
keeps only the start and the end.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import itertools
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from indexer.errors import InputError

MAX_ENTITY_LENGTH = 1024
MAX_ENTITIES = 1000
NETWORK_EVENTS = frozenset(
    {
        "urllib.Request",
        "http.client.connect",
        "socket.connect",
        "socket.getaddrinfo",
        "socket.gethostbyname",
    }
)
# Files up to this size are parsed in this process, without a child's start-up
# (about 0.25 s: Python and rdflib), when they are in a format without
# expansion: Turtle-family text, or RDF/XML without a DOCTYPE (no entities and
# no attribute defaults: a 5 kB file of entities with line breaks takes
# rdflib 20 s and more). There the worst cases are superlinear but small: a
# literal of line breaks, the slowest found, takes rdflib 0.1 s at 64 KiB on
# an idle core and 1.1 s on a saturated machine (0.3 s and 2.4 s at 128 KiB:
# benchmarks/rdf_bound.py), a quarter of that at this size; memory stays a
# few MB.
IN_PROCESS_BYTES = 32 * 1024
IN_PROCESS_FORMATS = frozenset({"turtle", "nt", "nquads", "trig", "xml"})
# ... and only when the budgets leave ample room for that worst case
IN_PROCESS_MIN_SECONDS = 5.0
IN_PROCESS_MIN_MEMORY = 256 * 2**20
CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 says "no limit" with a number near 2**63
NO_CGROUP_LIMIT = 2**60
# Of a child's stderr, the parent keeps the start and the end (to explain a
# failure), whatever the child writes: a parser may print without bound
STDERR_HEAD = 8 * 1024
STDERR_TAIL = 64 * 1024
# rdflib logs a warning (with a traceback) for each literal that is not of its
# datatype: 400 bytes each, so a vocabulary could print gigabytes. They are
# counted, and one summary with a few examples is logged instead
WARNING_EXAMPLES = 3
# what a child's stderr says when it ran out of memory (Python, the C library,
# Rust's allocator in pyoxigraph)
OUT_OF_MEMORY = ("MemoryError", "Cannot allocate memory", "memory allocation of")
# the formats pyoxigraph parses here (without network access: none of them
# refers to other documents), and rdflib's names for them
FAST_FORMATS = {
    "turtle": "TURTLE",
    "nt": "N_TRIPLES",
    "nquads": "N_QUADS",
    "trig": "TRIG",
}
# pyoxigraph refuses a term (a literal, an IRI) longer than 16 MiB with a
# MemoryError that says this, whatever memory is left: rdflib reads such a file
FAST_TOKEN_LIMIT = "Reached the buffer maximal size"
# pyoxigraph lower-cases language tags, rdflib keeps them as written: a file
# with an upper-case letter right after a literal's '@' goes to rdflib
_UPPER_CASE_LANGUAGE = re.compile(rb"[\"']@[A-Za-z0-9-]*[A-Z]")
# a collector is given a blank node as this and its name (an IRI cannot start
# so), the parsers' names for it differing
BLANK = "_:"
XSD = "http://www.w3.org/2001/XMLSchema#"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
# strings in any datatype: no rdflib normalisation to copy
STRING_TYPES = frozenset({XSD + "string", RDF + "langString"})
# rows the child sends in one JSON line (a line each costs more time to write
# and read; one for all, the memory of a copy of them all)
ROWS_PER_LINE = 1000
# how often (in statements) a parse looks at the clock
CLOCK_EVERY = 2048
_OFFLINE = threading.local()
_HOOK_INSTALLED = threading.Lock()
_hooked = False


class NetworkRefused(RuntimeError):
    """Raised inside a parse that tried to reach the network."""


class _OverBudget(BaseException):
    """Stops a parse that ran out of time (a BaseException, so that parsers
    which catch Exception cannot swallow it)."""


def budget() -> tuple[int, float]:
    """(largest file in bytes, most seconds) a vocabulary parse may use."""
    megabytes = float(os.environ.get("INDEXER_VOCAB_MAX_MB", 4096))
    seconds = float(os.environ.get("INDEXER_VOCAB_MAX_SECONDS", 1800))
    return int(megabytes * 1024 * 1024), seconds


def memory_budget() -> int:
    """The most bytes of address space a vocabulary parse may use:
    `INDEXER_VOCAB_MAX_MEMORY_MB`, else `default_memory_budget()`."""
    value = os.environ.get("INDEXER_VOCAB_MAX_MEMORY_MB")
    if value is not None:
        return int(float(value) * 2**20)
    return default_memory_budget()


def default_memory_budget(
    cgroup_root: Path = CGROUP_ROOT, cgroups: str | None = None
) -> int:
    """16384 MB, or less: the machine's physical memory, or the memory limit
    of this process's cgroup (a container's), whichever is the smallest, so
    that a hostile file meets this limit, not the out-of-memory killer."""
    limits = [16384 * 2**20]
    with suppress(AttributeError, ValueError, OSError):
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    limits.append(cgroup_memory_limit(cgroup_root, cgroups) or 0)
    return min(limit for limit in limits if limit > 0)


def cgroup_memory_limit(
    root: Path = CGROUP_ROOT, cgroups: str | None = None
) -> int | None:
    """The smallest memory limit on this process's cgroup and those above it:
    cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`, under `root`; None
    without one. `cgroups` is /proc/self/cgroup (read when None)."""
    if cgroups is None:
        try:
            cgroups = Path("/proc/self/cgroup").read_text()
        except OSError:  # not Linux
            cgroups = ""
    found = []
    for line in cgroups.splitlines():
        _, _, rest = line.partition(":")
        controllers, _, where = rest.partition(":")
        if not controllers:  # v2: one hierarchy
            found += _limits_along(root, where, "memory.max")
        elif "memory" in controllers.split(","):
            base = root / controllers
            if not base.is_dir():
                base = root / "memory"
            found += _limits_along(base, where, "memory.limit_in_bytes")
    return min(found, default=None)


def _limits_along(base: Path, where: str, name: str) -> list[int]:
    """The limits in file `name` of cgroup `where` and of its ancestors, under
    `base` (in a container, `where` may lie outside what is mounted there:
    then the mount's own file is the container's)."""
    parts = [p for p in where.strip().split("/") if p and p not in (".", "..")]
    limits = []
    for depth in range(len(parts) + 1):
        try:
            text = (base.joinpath(*parts[:depth]) / name).read_text().strip()
        except (OSError, ValueError):
            continue
        if text.isdigit() and 0 < int(text) < NO_CGROUP_LIMIT:
            limits.append(int(text))
    return limits


def check_size(path: Path, size: int) -> None:
    """An InputError when `size` bytes are over the budget."""
    limit, _ = budget()
    if size > limit:
        # a read that stops one byte past the limit (a decompression) does not
        # know the size: "4096.0 MB, over the limit of 4096.0 MB" said nothing
        what = "is" if size > limit + 1 else "is more than"
        shown = size if size > limit + 1 else limit
        raise InputError(
            f"Vocabulary file '{path}' {what} {shown / 2**20:.1f} MB, over the "
            f"limit of {limit / 2**20:.1f} MB; raise INDEXER_VOCAB_MAX_MB to load it"
        )


def _too_slow(path: Path, seconds: float) -> InputError:
    return InputError(
        f"Parsing '{path}' took longer than {seconds:g} s and was stopped; "
        "raise INDEXER_VOCAB_MAX_SECONDS to allow more"
    )


def _too_big(path: Path) -> InputError:
    return InputError(
        f"Parsing '{path}' needed more than {memory_budget() / 2**20:g} MB of "
        "memory and was stopped; raise INDEXER_VOCAB_MAX_MEMORY_MB to allow more"
    )


def _too_deep(path: Path, rdf_format: str) -> InputError:
    return InputError(
        f"Cannot parse '{path}' as {rdf_format}: it is nested too deeply for the "
        "parser (Python's recursion limit was reached); flatten the nesting"
    )


def parse_rows(data: bytes, rdf_format: str, path: Path, collector: str) -> Iterator:
    """The rows of the statements of `data`: `collector` ("module:Class", like
    `indexer.skosrows.ConceptRows`) is given each statement (`add`) and makes
    the rows (`rows()`, lists that `json` can write). The parse has the hard
    bounds of the module docstring: in a child process that sends the rows
    back as JSON lines. InputError naming `path` otherwise."""
    check_size(path, len(data))
    if _in_process(data, rdf_format):
        sink = collect(data, rdf_format, path, _function(collector))
        with gc_paused():
            return iter(list(sink.rows()))
    return _rows_from_child(data, rdf_format, path, collector)


def _in_process(data: bytes, rdf_format: str) -> bool:
    """Whether `data` is too small and plain to break a budget (see
    IN_PROCESS_BYTES), so that the child process can be saved."""
    _, seconds = budget()
    if (
        len(data) > IN_PROCESS_BYTES
        or rdf_format not in IN_PROCESS_FORMATS
        or seconds < IN_PROCESS_MIN_SECONDS
        or memory_budget() < IN_PROCESS_MIN_MEMORY
    ):
        return False
    return rdf_format != "xml" or not has_doctype(data)


def parse_graph(data: bytes, rdf_format: str, path: Path, report: bool = True):
    """An rdflib Graph of `data`, parsed offline, with bounded XML entities and
    within the time budget; InputError naming `path` otherwise. This runs in
    the calling process, where the time budget is checked only as triples
    arrive and memory is not bounded: for untrusted files use `parse_extract`.
    What rdflib logs is counted and logged as one warning (`report`), or kept
    in the graph's `warnings` for the caller to report."""
    check_size(path, len(data))
    _, seconds = budget()
    _install_network_guard()
    _OFFLINE.active = True
    _OFFLINE.refused = None
    try:
        with _rdflib_warnings_counted() as warnings:
            graph = _parse(data, rdf_format, path, seconds)
    finally:
        _OFFLINE.active = False
    if report:
        warnings.report(path)
    else:
        graph.warnings = warnings
    return graph


def collect(data: bytes, rdf_format: str, path: Path, make_sink, report=True):
    """A `make_sink()` given the statements of `data`'s default graph, parsed
    as `parse_graph` does (offline, within the time budget, in this process),
    but without building a graph. What rdflib logs is counted and logged as
    one warning (`report`), or kept in the sink's `warnings`."""
    check_size(path, len(data))
    _, seconds = budget()
    deadline = time.monotonic() + seconds
    _install_network_guard()
    _OFFLINE.active = True
    _OFFLINE.refused = None
    try:
        with _rdflib_warnings_counted() as warnings:
            sink = None
            if _fast_parser_fits(data, rdf_format):
                with gc_paused():  # see gc_paused: no cycles made here
                    sink = _parse_fast(data, rdf_format, path, make_sink(), deadline)
            if sink is None:
                sink = make_sink()
                store = _collecting_store(sink)
                _parse(data, rdf_format, path, seconds, store, deadline)
    finally:
        _OFFLINE.active = False
    if report:
        warnings.report(path)
    sink.warnings = warnings
    return sink


def _fast_parser_fits(data: bytes, rdf_format: str) -> bool:
    """Whether pyoxigraph is there, may be used, and reads `data` as rdflib
    would (see FAST_FORMATS)."""
    if rdf_format not in FAST_FORMATS or parser_setting() == "rdflib":
        return False
    if importlib.util.find_spec("pyoxigraph") is None:
        return False
    return _UPPER_CASE_LANGUAGE.search(data) is None and not _raw_line_breaks(data)


def _raw_line_breaks(data: bytes) -> bool:
    """Whether a long string (triple quotes, Turtle and TriG) may hold a
    carriage return as written: rdflib reads it as a line feed, pyoxigraph
    keeps it (a file with Windows line breaks and multi-line notes)."""
    return b"\r" in data and (b'"""' in data or b"'''" in data)


def parser_setting() -> str:
    """`INDEXER_VOCAB_PARSER`: "auto" (pyoxigraph where it can) or "rdflib"."""
    value = os.environ.get("INDEXER_VOCAB_PARSER", "auto").strip().lower() or "auto"
    if value not in ("auto", "rdflib"):
        raise InputError(
            f"INDEXER_VOCAB_PARSER is '{value}'; use 'auto' (pyoxigraph where "
            "installed, else rdflib) or 'rdflib'"
        )
    return value


class _NotForFastParser(Exception):
    """A term rdflib has no kind for (an RDF 1.2 triple term or base
    direction): rdflib decides what such a file means."""


def _parse_fast(data: bytes, rdf_format: str, path: Path, sink, deadline: float):
    """`sink` given the statements of the default graph, parsed by pyoxigraph;
    None when pyoxigraph refuses the file (rdflib is to parse it then)."""
    try:
        _feed_fast(data, rdf_format, sink, deadline)
    except (SyntaxError, _NotForFastParser):
        return None
    except _OverBudget:
        raise _too_slow(path, budget()[1]) from None
    except MemoryError as exc:
        if FAST_TOKEN_LIMIT in str(exc):  # a term over its buffer, not memory
            return None
        raise _too_big(path) from None
    return sink


def _feed_fast(data: bytes, rdf_format: str, sink, deadline: float) -> None:
    from pyoxigraph import BlankNode, DefaultGraph, Literal, NamedNode, RdfFormat
    from pyoxigraph import parse as parse_rdf

    wanted = sink.predicates
    add = sink.add
    # relative IRIs resolve against what rdflib takes as the base of data
    base = Path.cwd().as_uri() + "/"
    statements = parse_rdf(
        data, getattr(RdfFormat, FAST_FORMATS[rdf_format]), base_iri=base
    )
    quads = rdf_format in ("nquads", "trig")
    countdown = CLOCK_EVERY
    for statement in statements:
        countdown -= 1
        if not countdown:
            if time.monotonic() > deadline:
                raise _OverBudget
            countdown = CLOCK_EVERY
        predicate = statement.predicate.value
        if predicate not in wanted:
            continue
        if quads and type(statement.graph_name) is not DefaultGraph:
            continue  # a named graph's: rdflib reads only the default graph here
        subject, value = statement.subject, statement.object
        kind = type(subject)
        if kind is NamedNode:
            name = subject.value
        elif kind is BlankNode:
            name = BLANK + subject.value
        else:
            raise _NotForFastParser
        kind = type(value)
        if kind is Literal:
            lang = value.language
            if lang is not None and value.direction is None:
                add(name, predicate, value.value, lang, "")
            else:
                add(name, predicate, *_literal_parts(value))
        elif kind is NamedNode:
            add(name, predicate, value.value, None, None)
        elif kind is BlankNode:
            add(name, predicate, BLANK + value.value, None, None)
        else:
            raise _NotForFastParser


def _literal_parts(literal) -> tuple[str, str | None, str]:
    """(lexical form, language, datatype) of a pyoxigraph Literal, as rdflib
    gives them: typed XSD and RDF values in rdflib's normal form ("01" as
    xsd:integer is "1"), and a plain literal with datatype ""."""
    if getattr(literal, "direction", None) is not None:
        raise _NotForFastParser
    datatype = literal.datatype.value
    if datatype in STRING_TYPES:
        return literal.value, literal.language, ""
    if datatype.startswith((XSD, RDF)):
        from rdflib import Literal, URIRef

        return str(Literal(literal.value, datatype=URIRef(datatype))), None, datatype
    return literal.value, None, datatype


def _parse(
    data: bytes,
    rdf_format: str,
    path: Path,
    seconds: float,
    store=None,
    deadline: float | None = None,
):
    """The rdflib Graph of `data` in `store` (by default one that keeps it all),
    which stops the parse at `deadline` (`seconds` from now by default)."""
    import rdflib

    try:
        if rdf_format == "json-ld":
            _refuse_remote_contexts(data, path)
        if rdf_format == "xml":
            check_xml_entities(data, path)
        if store is None:
            store = _budget_store()
        store.deadline = time.monotonic() + seconds if deadline is None else deadline
        graph = rdflib.Graph(store=store)
        store.default_graph = graph.identifier
        graph.parse(data=data, format=rdf_format)
    except _OverBudget:
        raise _too_slow(path, seconds) from None
    except RecursionError:
        raise _too_deep(path, rdf_format) from None
    except MemoryError:
        raise _too_big(path) from None
    except InputError:
        raise
    except Exception as exc:  # rdflib raises many parser-specific types
        refused = _OFFLINE.refused
        if refused:
            raise InputError(
                f"Vocabulary file '{path}' refers to {refused}, and vocabularies "
                "are parsed without network access: make the file self-contained"
            ) from None
        message = " ".join(str(exc).split())[:300]
        raise InputError(f"Cannot parse '{path}' as {rdf_format}: {message}") from None
    return graph


class _RdflibWarnings(logging.Handler):
    """Counts what rdflib logs during a parse, keeping a few examples, instead
    of printing each record with its traceback."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0
        self.examples: list[str] = []

    def handle(self, record: logging.LogRecord) -> bool:
        # no lock per record, and no formatting of the traceback
        if record.levelno >= self.level:
            self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.examples) < WARNING_EXAMPLES:
            try:
                message = record.getMessage()
            except Exception:  # arguments that do not fit the format
                message = str(record.msg)
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({record.exc_info[1]})"  # what it was about
            self.examples.append(" ".join(message.split())[:300])

    def report(self, path: Path) -> None:
        """One warning in this process's log for all that rdflib logged."""
        report_warnings(path, self.count, self.examples)


_COUNTING = threading.Lock()
_counting = 0  # parses counting now: rdflib's logger is one for all threads


@contextmanager
def _rdflib_warnings_counted() -> Iterator[_RdflibWarnings]:
    """While in it, rdflib's log records are counted, not passed on."""
    global _counting
    logger = logging.getLogger("rdflib")
    counter = _RdflibWarnings()
    with _COUNTING:
        logger.addHandler(counter)
        _counting += 1
        logger.propagate = False
    try:
        yield counter
    finally:
        with _COUNTING:
            logger.removeHandler(counter)
            _counting -= 1
            logger.propagate = _counting == 0


def report_warnings(path: Path, count: int, examples: list[str]) -> None:
    """Log how often the parser of `path` warned, with a few examples."""
    if count:
        logging.getLogger(__name__).warning(
            "Parsing '%s': rdflib warned %d times, such as: %s",
            path,
            count,
            "; ".join(examples),
        )


def _budget_store():
    from rdflib.plugins.stores.memory import Memory

    class BudgetStore(Memory):
        """A memory store that stops the parse when the time is up."""

        added = 0
        deadline = math.inf

        def add(self, triple, context, quoted=False):
            self.added += 1
            if self.added % CLOCK_EVERY == 0 and time.monotonic() > self.deadline:
                raise _OverBudget
            return super().add(triple, context, quoted)

    return BudgetStore()


def _collecting_store(sink):
    """An rdflib store that keeps nothing: it hands the statements of the
    default graph (not those of named graphs or N3 formulas) that `sink`
    wants to it, and stops the parse when the time is up."""
    from rdflib import BNode, Literal
    from rdflib.plugins.stores.memory import Memory

    wanted, add = sink.predicates, sink.add

    class CollectingStore(Memory):
        added = 0
        deadline = math.inf
        default_graph = None

        def add(self, triple, context, quoted=False):
            self.added += 1
            if self.added % CLOCK_EVERY == 0 and time.monotonic() > self.deadline:
                raise _OverBudget
            subject, predicate, value = triple
            if quoted or str(predicate) not in wanted:
                return
            if getattr(context, "identifier", None) != self.default_graph:
                return
            name = subject.n3() if isinstance(subject, BNode) else str(subject)
            if isinstance(value, Literal):
                datatype = "" if value.datatype is None else str(value.datatype)
                add(name, str(predicate), str(value), value.language, datatype)
            else:
                value = value.n3() if isinstance(value, BNode) else str(value)
                add(name, str(predicate), value, None, None)

    return CollectingStore()


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while in it: code that makes millions of
    containers and no cycles (a vocabulary's rows) spent a third of its time
    in collections that walked them all again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _function(name: str) -> Callable:
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


# -- the child process ----------------------------------------------------

# The child imports this copy of the package (from sys.argv[2]), whatever the
# working directory and sys.path; -P keeps the working directory off sys.path,
# and the package's folder is on it only while `indexer` is imported.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
_CHILD = (
    "import sys; sys.path.insert(0, sys.argv[2]); "
    "from indexer.rdfsafe import _child_main; "
    "sys.path.remove(sys.argv[2]); _child_main()"
)


def _rows_from_child(data: bytes, rdf_format: str, path: Path, collector: str):
    """The collector's rows, made in a child process that has `memory_budget()`
    bytes of address space and is killed when the time budget is over; they
    arrive a thousand to a JSON line, so that neither side holds them as one
    text."""
    _, seconds = budget()
    timeout = max(seconds, 0.0) if math.isfinite(seconds) else None
    job = {
        "format": rdf_format,
        "path": str(path),
        "collector": collector,
        "memory": memory_budget(),
        # a backstop for a child left alone (its parent killed, where the
        # parent-death signal is not there): a process cannot use more CPU
        # seconds than wall-clock seconds
        "cpu": None if timeout is None else math.ceil(timeout) + 1,
        "parent": os.getpid(),
    }
    err_read, err_write = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-c", _CHILD, json.dumps(job), _PACKAGE_ROOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err_write,
            bufsize=1 << 16,
        )
    except BaseException:
        os.close(err_read)
        raise
    finally:
        os.close(err_write)
    stderr = BoundedOutput(os.fdopen(err_read, "rb", buffering=0))
    expired = threading.Event()
    timer = None
    if timeout is not None:
        timer = threading.Timer(timeout, _expire, (proc, expired))
        timer.start()
    threading.Thread(target=_send, args=(proc.stdin, data), daemon=True).start()
    del data  # the thread holds it until the child has it all
    end = None
    try:
        for line in proc.stdout:
            if not line.endswith(b"\n"):
                break  # cut off: the child was killed while writing it
            if line.startswith(b"{"):
                end = json.loads(line)
                break
            yield from json.loads(line)  # as the child wrote it (surrogatepass)
        proc.wait()
    finally:  # the deadline, an interrupt, or any error here: the child goes
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        err = stderr.close()
    if expired.is_set():
        raise _too_slow(path, seconds)
    if end is None:  # no reply: it died (out of memory, a crash)
        if hasattr(signal, "SIGXCPU") and proc.returncode == -signal.SIGXCPU:
            raise _too_slow(path, seconds)  # the CPU-time backstop
        raise _child_failed(path, rdf_format, proc.returncode, err)
    if "error" in end:
        raise InputError(end["error"])
    report_warnings(path, *end["warnings"])


def _expire(proc: subprocess.Popen, expired: threading.Event) -> None:
    expired.set()
    with suppress(OSError):
        proc.kill()


def _send(pipe, data: bytes) -> None:
    """Write `data` to the child's stdin (which it may close early, dying)."""
    with suppress(OSError), pipe:
        pipe.write(data)


class BoundedOutput:
    """Reads a pipe to its end in a thread, keeping only its first `head` and
    last `tail` bytes (and counting the rest), so that a process writing
    without bound cannot fill this one's memory."""

    def __init__(self, pipe, head: int = STDERR_HEAD, tail: int = STDERR_TAIL):
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self._limits = head, tail
        self._pipe = pipe
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        head, tail = self._limits
        with self._pipe:
            while chunk := self._pipe.read(1 << 16):
                self.total += len(chunk)
                room = head - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                    chunk = chunk[room:]
                self.tail += chunk
                if len(self.tail) > tail:
                    del self.tail[: len(self.tail) - tail]

    @property
    def held(self) -> int:
        """The bytes kept."""
        return len(self.head) + len(self.tail)

    def close(self, timeout: float = 5.0) -> bytes:
        """The start and the end, once the writer has ended (or `timeout`
        seconds on, when a grandchild keeps the pipe open)."""
        self._thread.join(timeout)
        left_out = self.total - self.held
        gap = f"\n[... {left_out} bytes left out ...]\n".encode() if left_out else b""
        return bytes(self.head) + gap + bytes(self.tail)


def _child_failed(path: Path, rdf_format: str, status: int, err: bytes) -> InputError:
    """The error for a child that ended without a reply."""
    text = err.decode("utf-8", "replace")
    if any(sign in text for sign in OUT_OF_MEMORY):
        return _too_big(path)
    if "RecursionError" in text:
        return _too_deep(path, rdf_format)
    if status < 0:
        try:
            why = f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            why = f"was killed by signal {-status}"
        if -status in (signal.SIGSEGV, signal.SIGBUS):
            why += " (a crash, e.g. from nesting too deep for the parser)"
        elif -status == signal.SIGKILL:
            why += " (perhaps by the system, for want of memory)"
    else:
        last = [line for line in text.splitlines() if line.strip()][-1:]
        why = f"stopped with exit status {status}" + (
            f": {' '.join(last[0].split())[:300]}" if last else ""
        )
    return InputError(f"Cannot parse '{path}' as {rdf_format}: the parser {why}")


def _child_main() -> None:
    """The child's side of `_rows_from_child`: the job (JSON) in argv[1], the
    file's bytes on stdin; on stdout JSON lines of rows (lists), then one object:
    `{"warnings": [count, examples]}` or `{"error": message}`."""
    job = json.loads(sys.argv[1])
    _die_with_parent(job["parent"])
    try:
        import resource

        memory = job["memory"]
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if job["cpu"] is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (job["cpu"], job["cpu"] + 1))
    except (ImportError, ValueError, OSError):  # no such limits here
        pass
    reply = os.fdopen(os.dup(1), "wb", buffering=1 << 20)
    os.dup2(2, 1)  # whatever a parser prints does not garble the reply
    sys.stdout = sys.stderr
    path = Path(job["path"])
    reserve = bytearray(1 << 20)  # room to report running out of memory
    failure = None
    try:
        end = {"warnings": _child_work(job, path, reply)}
    except InputError as exc:
        failure = exc.message
    except RecursionError:
        failure = _too_deep(path, job["format"]).message
    except MemoryError:
        failure = "memory"
    if failure == "memory":  # out of the handler, the parser's frames are gone
        del reserve
        failure = _too_big(path).message
    if failure is not None:
        end = {"error": failure}
    reply.write(json.dumps(end).encode("utf-8") + b"\n")
    reply.close()
    sys.stderr.flush()
    os._exit(0)  # at once: freeing many objects one by one takes long


def _die_with_parent(parent: int) -> None:
    """On Linux, have the kernel kill this process when its parent dies (a
    killed `indexer load-vocab` leaves no parse running). And keep 64 MB at
    the top of the heap when freeing: in a fresh process, glibc otherwise
    gives back and asks again for the memory of a string that grows (a long
    literal), which made such a parse take three times as long."""
    from indexer.parallel import die_with_parent

    die_with_parent()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            m_top_pad = -2
            ctypes.CDLL(None).mallopt(m_top_pad, 64 * 2**20)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before that
        os._exit(1)


def _child_work(job: dict, path: Path, reply) -> list:
    """Parse stdin into the job's collector and write its rows to `reply`;
    what rdflib logged, [count, examples]."""
    data = sys.stdin.buffer.read()
    sink = collect(data, job["format"], path, _function(job["collector"]), False)
    del data
    with gc_paused():
        _write_rows(sink.rows(), reply)
    return [sink.warnings.count, sink.warnings.examples]


def _write_rows(rows: Iterator[list], reply) -> None:
    while batch := list(itertools.islice(rows, ROWS_PER_LINE)):
        # surrogatepass: strings reach the parent as the parser made them (json
        # decodes bytes that way), lone surrogates of `\\u` escapes too
        line = json.dumps(batch, ensure_ascii=False)
        reply.write(line.encode("utf-8", "surrogatepass") + b"\n")


# -- network --------------------------------------------------------------


def _install_network_guard() -> None:
    global _hooked
    with _HOOK_INSTALLED:
        if not _hooked:
            sys.addaudithook(_audit)
            _hooked = True


def _audit(event: str, args: tuple) -> None:
    if event in NETWORK_EVENTS and getattr(_OFFLINE, "active", False):
        target = args[0] if args else "?"
        target = getattr(target, "full_url", target)
        _OFFLINE.refused = _OFFLINE.refused or f"a network resource ({target})"
        raise NetworkRefused(f"network access while parsing a vocabulary: {target}")


def _refuse_remote_contexts(data: bytes, path: Path) -> None:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise InputError(f"Cannot parse '{path}' as json-ld: {exc}") from None
    url = _remote_context(document)
    if url:
        raise InputError(
            f"Vocabulary file '{path}' has a remote JSON-LD @context ({url}); "
            "vocabularies are parsed without network access: put the context "
            "inline in the file"
        )


def _remote_context(node) -> str | None:
    """The first `@context` (or `@import`) anywhere in `node` that is not inline."""
    if isinstance(node, list):
        return next((u for u in map(_remote_context, node) if u), None)
    if not isinstance(node, dict):
        return None
    for key, value in node.items():
        if key in ("@context", "@import") and isinstance(value, str):
            return value
        if key == "@context" and isinstance(value, list):
            found = next((v for v in value if isinstance(v, str)), None)
            if found:
                return found
        found = _remote_context(value)
        if found:
            return found
    return None


# -- XML entities ---------------------------------------------------------


class _DocumentStarted(Exception):
    """The declarations are over: the entity check is done."""


def check_xml_entities(data: bytes, path: Path) -> None:
    """Refuse entity declarations that could expand beyond the file's size:
    external, parameter, nested (referring to other entities) or long ones."""
    from xml.parsers import expat

    parser = expat.ParserCreate()
    declared = []

    def on_entity(name, is_parameter, value, base, system_id, public_id, notation):
        why = None
        if is_parameter:
            why = "is a parameter entity"
        elif system_id or public_id or value is None:
            why = "is external"
        elif "&" in value or "%" in value:
            why = "refers to other entities (nested expansion)"
        elif len(value) > MAX_ENTITY_LENGTH:
            why = f"is longer than {MAX_ENTITY_LENGTH} characters"
        declared.append(name)
        if why is None and len(declared) > MAX_ENTITIES:
            why = f"is one of more than {MAX_ENTITIES} entity declarations"
        if why:
            raise InputError(
                f"Vocabulary file '{path}': the XML entity '{name}' {why}; such "
                "entities are refused because their expansion is unbounded"
            )

    def on_start(*_):
        raise _DocumentStarted

    parser.EntityDeclHandler = on_entity
    parser.StartElementHandler = on_start
    try:
        parser.Parse(data, True)
    except _DocumentStarted:
        return
    except expat.ExpatError as exc:
        raise InputError(f"Cannot parse '{path}' as xml: {exc}") from None


def has_doctype(data: bytes) -> bool:
    """Whether the XML in `data` has a DOCTYPE (entities, attribute defaults)
    before its first element; also True when expat cannot read that far."""
    from xml.parsers import expat

    parser = expat.ParserCreate()
    seen = []

    def on_doctype(*_):
        seen.append(True)
        raise _DocumentStarted

    def on_start(*_):
        raise _DocumentStarted

    parser.StartDoctypeDeclHandler = on_doctype
    parser.StartElementHandler = on_start
    try:
        parser.Parse(data, True)
    except _DocumentStarted:
        return bool(seen)
    except expat.ExpatError:
        return True  # the child process reports what is wrong
    return True
