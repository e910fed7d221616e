"""Decoder-only language models for backends: tokenizer and model loading with
pad-token handling, 4-bit loading, pooling, mixed precision and out-of-memory
errors a person can act on. Generic: shared by every LLM backend."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import threading
from functools import lru_cache
from pathlib import Path

from indexer.errors import ConfigError, DependencyError
from indexer.memory import available_memory as free_cpu_memory
from indexer.neural.models import ResolvedModel, resolve_model

_load_lock = threading.Lock()


def local_tokenizer(name: str):
    """The tokenizer of the model `name` when the model is on this machine (a
    local directory, a packaged model, a hub id in the local cache), so that
    a document for a server is cut as the local engine cuts it; None
    otherwise (loading a hub id that is not here would try to download it)."""
    try:
        model = resolve_model(name)
        if not on_this_machine(model):
            return None
        return load_tokenizer(model)
    except DependencyError:
        return None


def on_this_machine(model: ResolvedModel) -> bool:
    """Whether `model` loads without the hub: a local directory, a packaged
    model or a hub id in the local cache (an id not cached would be
    downloaded, or retried for a minute where the hub is out of reach)."""
    return not (model.identity.startswith("hub ") and "(cached)" not in model.identity)


def load_tokenizer(model: ResolvedModel, padding_side: str = "right"):
    """The model's tokenizer, with a pad token (eos or unk when it has none)."""
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model.path)
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DependencyError(
            f"Cannot load the tokenizer of model '{model.name}': {first}"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise DependencyError(
            f"The tokenizer of model '{model.name}' has no pad, eos or unk token"
        )
    tokenizer.padding_side = padding_side
    return tokenizer


def require_cuda(device: str, what: str) -> None:
    """Stop with an actionable error when `what` needs CUDA and `device` is not."""
    if not device.startswith("cuda"):
        raise DependencyError(
            f"{what} needs a CUDA GPU (bitsandbytes 4-bit weights), but the "
            f"device is '{device}': on CPU use mode = lora or mode = frozen"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise DependencyError(
            f"{what} needs bitsandbytes: pip install 'subject-indexer[gpu]'"
        )


def parameter_count(model: ResolvedModel) -> int:
    """Parameters in the model's safetensors files, read from their headers
    (0 when the model has none to read, e.g. a hub id not yet downloaded)."""
    total = 0
    for path in Path(model.path).glob("*.safetensors"):
        with open(path, "rb") as file:
            size = int.from_bytes(file.read(8), "little")
            header = json.loads(file.read(size))
        total += sum(
            math.prod(entry["shape"])
            for name, entry in header.items()
            if name != "__metadata__"
        )
    return total


def available_memory(device: str) -> int:
    """Bytes free for a new allocation: the GPU's free memory, or on CPU the
    smaller of the kernel's MemAvailable and what the cgroup limit leaves."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return free_cpu_memory()


def training_memory(model: ResolvedModel, batch_size: int, max_length: int, bits=32):
    """(weights, activations) in bytes for training adapters on `model`: the
    weights at `bits` per parameter, and the activations that backpropagation
    keeps, sbh(34 + 5as/h) bytes per layer in 16-bit (Korthikanti et al. 2022),
    twice that in fp32. A rough bound to stop early, not an exact figure."""
    weights = parameter_count(model) * bits // 8
    try:
        config = json.loads((Path(model.path) / "config.json").read_text())
        config = config.get("text_config", config)
        hidden, layers = config["hidden_size"], config["num_hidden_layers"]
        heads = config["num_attention_heads"]
    except (OSError, ValueError, KeyError):
        return weights, 0
    s, b = max_length, batch_size
    per_layer = s * b * hidden * (34 + 5 * heads * s / hidden)
    activations = int(per_layer * layers * (2 if bits == 32 else 1))
    return weights, activations


def check_training_memory(
    where: str,
    model: ResolvedModel,
    device: str,
    batch_size: int,
    max_length: int,
    bits: int = 32,
) -> None:
    """Stop before loading when training `model` (its weights at `bits`) clearly
    cannot fit in the memory free on `device`."""
    weights, activations = training_memory(model, batch_size, max_length, bits)
    free = available_memory(device)
    if weights + activations <= free:
        return
    gib = 2**30
    raise ConfigError(
        f"{where}: training model '{model.name}' needs about "
        f"{(weights + activations) / gib:.1f} GiB on {device} ({weights / gib:.1f} "
        f"GiB of weights, {activations / gib:.1f} GiB of activations at batch_size "
        f"= {batch_size} and max_length = {max_length}), but only "
        f"{free / gib:.1f} GiB is free: lower batch_size or max_length "
        "(gradient_accumulation keeps the effective batch size), use mode = qlora "
        "on a GPU, or a smaller model"
    )


def load_decoder(
    model: ResolvedModel,
    device: str,
    *,
    quantize_4bit: bool = False,
    dtype: str = "float32",
    causal_lm: bool = False,
):
    """The decoder without (default) or with its language-model head, in eval
    mode on `device`; `quantize_4bit` loads NF4 weights through bitsandbytes."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    auto = transformers.AutoModelForCausalLM if causal_lm else transformers.AutoModel
    options: dict = {"dtype": getattr(torch, dtype)}
    if quantize_4bit:
        require_cuda(device, "4-bit loading")
        options["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        options["device_map"] = {"": device}
    try:
        with _load_lock:
            lm = model_class(model, causal_lm, auto).from_pretrained(
                model.path, **options
            )
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DependencyError(f"Cannot load model '{model.name}': {first}") from None
    if not quantize_4bit:
        lm = lm.to(device)
    if lm.config.pad_token_id is None:
        lm.config.pad_token_id = lm.config.eos_token_id
    return lm.eval()


def model_class(model: ResolvedModel, causal_lm: bool, auto):
    """The architecture's own class (e.g. LlamaForCausalLM) from a local
    config.json, imported directly: resolving the Auto class imports
    transformers' model zoo, about 1.5 s of a cold start. `auto` otherwise."""
    import importlib
    import json
    from pathlib import Path

    config = Path(model.path) / "config.json"
    try:
        settings = json.loads(config.read_text())
        architecture = settings["architectures"][0]
        kind = settings["model_type"]
        module = importlib.import_module(f"transformers.models.{kind}.modeling_{kind}")
    except (OSError, KeyError, IndexError, TypeError, ValueError, ImportError):
        return auto
    if not architecture.endswith("ForCausalLM"):
        return auto
    name = architecture if causal_lm else architecture[: -len("ForCausalLM")] + "Model"
    return getattr(module, name, auto)


@lru_cache(maxsize=2)
def shared_decoder(name: str, device: str):
    """(resolved model, tokenizer, frozen decoder), loaded once per process for
    backends that never change the weights (inference, frozen features)."""
    model = resolve_model(name)
    decoder = load_decoder(model, device)
    for parameter in decoder.parameters():
        parameter.requires_grad_(False)
    return model, load_tokenizer(model), decoder, threading.Lock()


def pool(hidden, attention_mask, how: str = "last"):
    """Pooled hidden states: the last non-pad token (as
    `AutoModelForSequenceClassification` scores) or the mean over tokens.
    Works with left or right padding."""
    import torch

    mask = attention_mask.to(hidden.device)
    if how == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (positions * mask).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def autocast(device: str, precision: str):
    """bf16 autocast on CUDA when `precision` is auto or bf16; else a no-op."""
    import torch

    if device.startswith("cuda") and (
        precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported())
    ):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA or CPU allocation failure (as opposed to any other error)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def out_of_memory(where: str, device: str, batch_size: int, max_length: int):
    """The error to raise instead of a raw allocation failure."""
    return ConfigError(
        f"{where}: out of memory on {device} with batch_size = {batch_size} and "
        f"max_length = {max_length}: lower batch_size or max_length "
        "(gradient_accumulation keeps the effective batch size)"
    )
