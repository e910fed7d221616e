"""Causal language models for scoring: loaded once per process, asked yes/no
questions without generating text.

    lm = load_causal_lm("smollm2")
    logits = lm.yes_no_logits(prefix_ids, [suffix_ids, ...], yes_ids, no_ids)

The log-odds of "yes" against "no" as the next token come from the hidden
state of each prompt's last token, multiplied with only the answer tokens'
rows of the output matrix (a 262k-token vocabulary costs nothing here). The
shared prefix is run once and its KV cache serves every suffix.

A LoRA adapter (peft, safetensors) can be merged into the weights at load
(`load_causal_lm(name, adapter=DIR)`): the model then generates as the
fine-tuned one, at the base model's speed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from indexer.errors import ConfigError
from indexer.neural import prompt_text
from indexer.neural.models import ResolvedModel, resolve_model

DTYPES = ("auto", "float32", "bfloat16", "float16")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: written beside a LoRA adapter by its training: the base model's identity
ADAPTER_INFO = "finetune.json"


class CausalLM:
    """A tokenizer and a causal LM on one device, with yes/no scoring."""

    def __init__(
        self,
        model: ResolvedModel,
        device: str = "auto",
        dtype="auto",
        adapter: Path | None = None,
        adapter_name: str = "",
    ):
        import torch

        from indexer.neural.encoder import pick_device
        from indexer.neural.llm import load_decoder, load_tokenizer

        self.model_info = model
        self.device = pick_device(device)
        if dtype == "auto":
            dtype = auto_dtype(self.device)
        # the adapter is checked before the weights load
        self.adapter = adapter_identity(adapter, model, adapter_name) if adapter else ""
        self.tokenizer = load_tokenizer(model)
        self.model = load_decoder(model, self.device, dtype=dtype, causal_lm=True)
        if adapter:
            self.model = merged_adapter(self.model, adapter)
        config = self.model.config
        self.max_positions = context_window(config, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id
        self._softcap = getattr(config, "final_logit_softcapping", None)
        self._cache_argument = _cache_argument(self.model.get_decoder())
        self._torch = torch
        self._lock = threading.Lock()  # one forward pass at a time per model

    @property
    def identity(self) -> str:
        identity = self.model_info.identity
        return f"{identity} + adapter {self.adapter}" if self.adapter else identity

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    # -- tokens ------------------------------------------------------------
    def encode(self, text: str, special: bool = False) -> list[int]:
        """Token ids of `text`; `special` adds the tokenizer's BOS (never EOS)."""
        ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        eos = self.tokenizer.eos_token_id
        if special and ids and eos is not None and ids[-1] == eos and len(ids) > 1:
            ids = ids[:-1]
        return list(ids)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt whose user text was marked with
        `prompt_text.as_text` (as `chat_text` marks messages): control tokens
        in that text are read as text, the template's own as control."""
        return prompt_text.encode(self.tokenizer, prompt)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def first_tokens(self, words: list[str]) -> list[int]:
        """The first token of each word, lower-case and capitalised, bare and
        after a space: the tokens that start an answer."""
        out: list[int] = []
        for word in (w.strip() for w in words if w.strip()):
            cases = dict.fromkeys((word, word.lower(), word.capitalize()))
            for form in (f"{space}{case}" for case in cases for space in ("", " ")):
                ids = self.encode(form)
                if ids and ids[0] not in out and ids[0] != self.tokenizer.unk_token_id:
                    out.append(ids[0])
        # a bare first letter ("K" of "Kyllä") starts too many other words
        longer = [i for i in out if len(self.decode([i]).strip()) > 1]
        return longer or out

    # -- generating --------------------------------------------------------
    def generate(self, messages: list[dict], max_new_tokens: int = 128) -> str:
        """The model's greedy answer to chat `messages` ({role, content}),
        rendered with its chat template; the text generated, without the
        prompt and special tokens."""
        return self.complete(chat_text(self.tokenizer, messages), max_new_tokens)

    def complete(self, text: str, max_new_tokens: int = 128) -> str:
        """The model's greedy continuation of the prompt `text` (a rendered
        chat, see `chat_text`), without the prompt and special tokens; it
        stops at the end of the model's turn. Control tokens that a document
        in the chat holds are read as text."""
        prompt = self.encode_prompt(text)
        torch = self._torch
        with self._lock, torch.inference_mode():
            ids = torch.tensor([prompt], device=self.device)
            output = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.pad_id,
                eos_token_id=self._stop_ids(),
            )
        return self.decode(output[0, len(prompt) :].tolist()).strip()

    def _stop_ids(self) -> list[int]:
        """The tokens that end an answer: EOS and the chat template's end of
        the assistant's turn (a fine-tuned generator learns to write it)."""
        eos = self.tokenizer.eos_token_id
        out = [] if eos is None else [eos]
        if self.has_chat_template:
            out += [i for i in end_of_turn(self.tokenizer)[:1] if i not in out]
        generation = getattr(self.model, "generation_config", None)
        configured = getattr(generation, "eos_token_id", None)
        if isinstance(configured, int):
            configured = [configured]
        out += [i for i in configured or [] if i not in out]
        return out

    # -- scoring -----------------------------------------------------------
    def yes_no_logits(
        self,
        prefix: list[int],
        suffixes: list[list[int]],
        yes: list[int],
        no: list[int],
        batch_size: int = 16,
        reuse_prefix: bool = True,
    ) -> np.ndarray:
        """log P(yes) - log P(no) of the next token after each `prefix + suffix`.

        With `reuse_prefix`, the prefix is run once and its KV cache is copied
        for each batch of suffixes; otherwise every prompt runs in full."""
        if not suffixes:
            return np.zeros(0, dtype=np.float32)
        torch = self._torch
        out = np.zeros(len(suffixes), dtype=np.float32)
        order = np.argsort([len(s) for s in suffixes], kind="stable")  # less padding
        with self._lock, torch.inference_mode():
            answer = self._answer_matrix(yes, no)
            decoder = self.model.get_decoder()
            cache = None
            if reuse_prefix and prefix:
                ids = torch.tensor([prefix], device=self.device)
                cache = decoder(input_ids=ids, use_cache=True).past_key_values
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                chunk = [suffixes[i] for i in index]
                if cache is None:
                    chunk = [prefix + s for s in chunk]
                hidden = self._last_hidden(decoder, chunk, cache, len(prefix))
                out[index] = self._log_odds(hidden, answer, len(yes))
        return out

    def _answer_matrix(self, yes: list[int], no: list[int]):
        head = self.model.get_output_embeddings()
        ids = self._torch.tensor(yes + no, device=self.device)
        weight = head.weight.index_select(0, ids)
        bias = getattr(head, "bias", None)
        return weight, None if bias is None else bias.index_select(0, ids)

    def _last_hidden(self, decoder, sequences, cache, prefix_length: int):
        """Final hidden state of each sequence's last token (right padding)."""
        import copy

        torch = self._torch
        lengths = torch.tensor([len(s) for s in sequences], device=self.device)
        width = int(lengths.max())
        ids = torch.full((len(sequences), width), self.pad_id, device=self.device)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq, device=self.device)
        mask = (torch.arange(width, device=self.device)[None, :] < lengths[:, None]).to(
            torch.long
        )
        kwargs = {}
        if cache is not None:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(sequences))
            ones = torch.ones(len(sequences), prefix_length, dtype=torch.long)
            mask = torch.cat([ones.to(self.device), mask], dim=1)
            kwargs = {self._cache_argument: past, "use_cache": True}
        hidden = decoder(input_ids=ids, attention_mask=mask, **kwargs)
        hidden = hidden.last_hidden_state
        return hidden[torch.arange(len(sequences), device=self.device), lengths - 1]

    def _log_odds(self, hidden, answer, n_yes: int) -> np.ndarray:
        weight, bias = answer
        logits = hidden.to(weight.dtype) @ weight.T
        if bias is not None:
            logits = logits + bias
        logits = logits.float()
        if self._softcap:
            logits = self._torch.tanh(logits / self._softcap) * self._softcap
        yes = self._torch.logsumexp(logits[:, :n_yes], dim=-1)
        no = self._torch.logsumexp(logits[:, n_yes:], dim=-1)
        return (yes - no).cpu().numpy()


def chat_text(tokenizer, messages: list[dict]) -> str:
    """The text a chat model reads for `messages`: its chat template with the
    assistant's turn opened (what `generate` sends, and what fine-tuning
    data must show it). Control tokens in the messages are marked
    (`prompt_text.as_text`), so that `CausalLM.encode_prompt` reads them as
    text: a document cannot open or close a turn."""
    marked = [
        {**m, "content": prompt_text.as_text(tokenizer, m["content"])}
        if isinstance(m.get("content"), str)
        else m
        for m in messages
    ]
    return tokenizer.apply_chat_template(
        marked, tokenize=False, add_generation_prompt=True
    )


_ANSWER = "\u2063ANSWER\u2063"


def end_of_turn(tokenizer) -> list[int]:
    """Token ids the chat template writes after an assistant's answer up to
    the next turn (e.g. `<|im_end|>` or `<end_of_turn>`, not always the EOS
    token), trailing white space left out; [EOS] without a template."""
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    if not getattr(tokenizer, "chat_template", None):
        return eos
    try:
        rendered = tokenizer.apply_chat_template(
            [
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": _ANSWER},
            ],
            tokenize=False,
        )
    except Exception:  # noqa: BLE001 - a template may refuse this conversation
        return eos
    if _ANSWER not in rendered:
        return eos
    tail = rendered.split(_ANSWER, 1)[1].rstrip()
    ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else []
    return ids or eos


def context_window(config, tokenizer) -> int:
    """Tokens the model reads at most: its position embeddings, or the
    tokenizer's limit when that is lower."""
    positions = getattr(config, "max_position_embeddings", None) or 2048
    limit = tokenizer.model_max_length
    return min(positions, limit) if limit else positions


def load_prompt_side(name: str):
    """(tokenizer, context window) of the causal LM `name`, without loading
    its weights (to render prompts for fine-tuning data)."""
    import transformers

    from indexer.neural.llm import load_tokenizer

    model = resolve_model(name)
    tokenizer = load_tokenizer(model)
    config = transformers.AutoConfig.from_pretrained(model.path)
    return tokenizer, context_window(config, tokenizer)


def check_adapter(adapter: Path, model: ResolvedModel) -> None:
    """A LoRA adapter directory that can go on `model`: peft's config and
    safetensors weights (never a pickle), and, when its training recorded
    one, the same base model; ConfigError otherwise."""
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(
            f"adapter '{adapter}' is not a LoRA adapter directory (it has no "
            "adapter_config.json)"
        )
    if not (adapter / ADAPTER_WEIGHTS).is_file():
        raise ConfigError(
            f"adapter '{adapter}' has no {ADAPTER_WEIGHTS}: save adapters with "
            "safetensors (a pickled adapter_model.bin is not loaded)"
        )
    info = adapter / ADAPTER_INFO
    if info.is_file():
        base = json.loads(info.read_text()).get("base_model", {})
        if base.get("identity") and base["identity"] != model.identity:
            raise ConfigError(
                f"adapter '{adapter}' was trained on model '{base.get('name')}' "
                f"({base['identity']}), but model = {model.name} is "
                f"'{model.identity}': name the base model it was trained on"
            )


def adapter_identity(adapter: Path, model: ResolvedModel, name: str = "") -> str:
    """The adapter's name (`name`, default: its directory's) and a digest of
    its config and whole weights (checked first): distinct for two
    trainings, recorded in calibrations."""
    check_adapter(adapter, model)
    sha = hashlib.sha256((adapter / "adapter_config.json").read_bytes())
    with open(adapter / ADAPTER_WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):  # the whole weights
            sha.update(block)
    return f"{name or adapter.name} {sha.hexdigest()[:16]}"


def merged_adapter(lm, adapter: Path):
    """`lm` with the LoRA adapter at `adapter` merged into its weights."""
    from peft import PeftModel

    try:
        wrapped = PeftModel.from_pretrained(lm, str(adapter))
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"adapter '{adapter}' does not fit the model: {first}"
        ) from None
    return wrapped.merge_and_unload().eval()


def auto_dtype(device: str) -> str:
    """bfloat16 on GPUs and on CPUs that compute it natively (AVX512-BF16,
    AMX: about 3x faster than float32 for gemma-3-270m on 2 EPYC cores),
    float32 elsewhere."""
    import torch

    if device.startswith("cuda"):
        return "bfloat16"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
    fast = native and (" avx512_bf16" in flags or " amx_bf16" in flags)
    return "bfloat16" if fast else "float32"


def _cache_argument(decoder) -> str:
    """Name of the KV-cache argument: `cache` in newer transformers, where
    `past_key_values` is deprecated."""
    import inspect

    parameters = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


@lru_cache(maxsize=2)
def _load(
    name: str, device: str, dtype: str, adapter: str, adapter_identity: str
) -> CausalLM:
    if not adapter:
        return CausalLM(resolve_model(name), device, dtype)
    real, shown = adapter.split("\0")
    return CausalLM(resolve_model(name), device, dtype, Path(real), shown)


def load_causal_lm(
    name: str, device: str = "auto", dtype: str = "auto", adapter: str = ""
) -> CausalLM:
    """The causal LM `name` (packaged, local directory or hub id), with the
    LoRA adapter directory `adapter` merged in when one is named; loaded
    once per model and adapter weights (an adapter trained again in place,
    or a link to it moved, loads afresh)."""
    identity = ""
    if adapter:
        real = Path(adapter).resolve()  # a link swapped to a new training
        shown = Path(adapter).name
        identity = adapter_identity(real, resolve_model(name), shown)
        adapter = f"{real}\0{shown}"
    return _load(name, device, dtype, adapter, identity)
