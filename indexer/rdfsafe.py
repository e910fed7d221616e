"""Parse RDF from files nobody vetted: offline, bounded, within a budget.

Vocabulary files may come from outside, so parsing one must not
- reach the network: a JSON-LD `@context` that is a URL is refused before
  parsing, and any other attempt to open a URL or a socket while parsing
  (rdflib follows some references by itself) is stopped by an audit hook;
- expand XML entities without bound: RDF/XML entity declarations are
  checked first; external and parameter entities, entities that refer to
  other entities (the "billion laughs") and long ones are refused, so
  expansion stays linear in the file size;
- run without limit: the file size and the parse time have a budget
  (`INDEXER_VOCAB_MAX_MB`, default 4096; `INDEXER_VOCAB_MAX_SECONDS`,
  default 1800), checked as triples arrive.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
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


def check_size(path: Path, size: int) -> None:
    """An InputError when `size` bytes are over the budget."""
    limit, _ = budget()
    if size > limit:
        raise InputError(
            f"Vocabulary file '{path}' is {size / 2**20:.1f} MB, over the limit of "
            f"{limit / 2**20:.1f} MB; raise INDEXER_VOCAB_MAX_MB to load it"
        )


def parse_graph(data: bytes, rdf_format: str, path: Path):
    """An rdflib Graph of `data`, parsed offline, with bounded XML entities and
    within the time budget; InputError naming `path` otherwise."""
    import rdflib

    check_size(path, len(data))
    if rdf_format == "json-ld":
        _refuse_remote_contexts(data, path)
    if rdf_format == "xml":
        check_xml_entities(data, path)
    _, seconds = budget()
    graph = rdflib.Graph(store=_budget_store(time.monotonic() + seconds))
    _install_network_guard()
    _OFFLINE.active = True
    _OFFLINE.refused = None
    try:
        graph.parse(data=data, format=rdf_format)
    except _OverBudget:
        raise InputError(
            f"Parsing '{path}' took longer than {seconds:g} s and was stopped; "
            "raise INDEXER_VOCAB_MAX_SECONDS to allow more"
        ) from None
    except Exception as exc:  # rdflib raises many parser-specific types
        refused = _OFFLINE.refused
        if refused:
            raise InputError(
                f"Vocabulary file '{path}' refers to {refused}, and vocabularies "
                "are parsed without network access: make the file self-contained"
            ) from None
        message = " ".join(str(exc).split())[:300]
        raise InputError(f"Cannot parse '{path}' as {rdf_format}: {message}") from None
    finally:
        _OFFLINE.active = False
    return graph


def _budget_store(deadline: float):
    from rdflib.plugins.stores.memory import Memory

    class BudgetStore(Memory):
        """A memory store that stops the parse when the time is up."""

        added = 0

        def add(self, triple, context, quoted=False):
            self.added += 1
            if self.added % 2048 == 0 and time.monotonic() > deadline:
                raise _OverBudget
            return super().add(triple, context, quoted)

    return BudgetStore()


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
