"""Backend lookup: built-ins imported on first use, plus the `indexer.backends`
entry-point group for third-party backends."""

from __future__ import annotations

import importlib
from functools import cache

from indexer.errors import ConfigError, DependencyError

BUILTIN = {
    "dummy": "backends.dummy:DummyBackend",
    "tfidf": "backends.tfidf:TfidfBackend",
    "lexical": "backends.lexical:LexicalBackend",
    "ensemble": "backends.ensemble:EnsembleBackend",
    "calibrated": "backends.fusion:CalibratedBackend",
    "xmc": "backends.xmc:XmcBackend",
    "knn": "backends.knn:KnnBackend",
    "embed": "backends.embed:EmbedBackend",
    "llm_rank": "backends.llm_rank:LlmRankBackend",
    "llm_generate": "backends.llm_generate:LlmGenerateBackend",
    "llm_head": "backends.llm_head:LlmHeadBackend",
}
ENTRY_POINT_GROUP = "indexer.backends"
DISTRIBUTION = "subject-indexer"

#: what each family of built-in backends needs beyond the core: the extra that
#: installs it and the modules checked (backends import them only when used)
EXTRAS = {
    "dense": ("torch", "transformers", "faiss"),
    "llm": ("torch", "transformers", "faiss", "peft", "gguf"),
    "xmc": ("omikuji",),
}
BACKEND_EXTRAS = {
    "knn": "dense",
    "embed": "dense",
    "llm_rank": "llm",
    "llm_generate": "llm",
    "llm_head": "llm",
    "xmc": "xmc",
}


@cache
def _entry_points() -> dict[str, object]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    """All backend names, built-in and installed."""
    return sorted(set(BUILTIN) | set(_entry_points()))


@cache
def get_backend_class(name: str) -> type:
    """Import and return the backend class registered as `name`."""
    if name in BUILTIN:
        module_name, _, class_name = BUILTIN[name].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise _missing(name, [exc.name]) from None
        return getattr(module, class_name)
    entry_point = _entry_points().get(name)
    if entry_point is None:
        raise ConfigError(
            f"Unknown backend '{name}'. Available backends: "
            f"{', '.join(backend_names())}"
        )
    return entry_point.load()


def check_dependencies(name: str) -> None:
    """Raise a DependencyError naming the extra to install when a built-in
    backend's optional dependencies are missing (checked without importing)."""
    from importlib.util import find_spec

    extra = BACKEND_EXTRAS.get(name)
    if extra is None:
        return
    missing = [module for module in EXTRAS[extra] if find_spec(module) is None]
    if missing:
        raise _missing(name, missing)


def _missing(name: str, modules: list[str]) -> DependencyError:
    extra = BACKEND_EXTRAS.get(name)
    fix = (
        f"pip install '{DISTRIBUTION}[{extra}]'"
        if extra
        else f"pip install {' '.join(modules)}"
    )
    return DependencyError(
        f"Backend '{name}' needs the Python package(s) {', '.join(modules)}, "
        f"which are not installed: {fix}"
    )
