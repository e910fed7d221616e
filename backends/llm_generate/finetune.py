"""Fine-tuning llm_generate's generator: its data and its LoRA training.

`examples(backend, corpus)` turns indexed documents into the prompt the
generator reads for each (rendered by the backend's own `chat_prompt`, so
the prompts of training and of suggesting cannot drift apart) and the answer
to teach it: the JSON list of the document's subjects' labels, as the prompt
asks for them (`indexer finetune-data` writes them as JSONL). `fine_tune`
trains a LoRA adapter (peft) on such pairs, the loss on the answer's tokens
and the end of the turn only, and saves it with safetensors beside
`finetune.json` (the base model's identity, the settings, the losses), for
`adapter = DIR`.

    settings = LoraSettings(steps=300, device="cuda")
    info = fine_tune("smollm2", read_examples(Path("train.jsonl")), settings, out)

or from a shell: `python -m backends.llm_generate.finetune train.jsonl out`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from indexer.errors import ConfigError, InputError
from indexer.neural import prompt_text
from indexer.neural.causal_lm import ADAPTER_INFO, end_of_turn
from indexer.neural.models import resolve_model
from indexer.textfile import strict_lines

IGNORED = -100  # the label of a token the loss skips (the prompt, the padding)


@dataclass(frozen=True)
class Example:
    """A prompt as the generator reads it and the answer to teach it."""

    prompt: str
    completion: str
    cut: bool = False  # the document was cut to max_doc_tokens

    def record(self) -> dict:
        """The JSONL record: {"prompt": ..., "completion": ...}."""
        return {"prompt": self.prompt, "completion": self.completion}


def examples(backend, corpus) -> Iterator[Example]:
    """Per document of `corpus` with a subject that has a label: the prompt
    `backend` (llm_generate) reads for it and, as the answer, the JSON list
    of its subjects' prefLabels in the language the terms are matched in
    (label_language), at most `terms`. Deprecated subjects are left out:
    no term maps to one."""
    p, vocab = backend.params, backend.project.vocab
    pref, _, _ = vocab.labels_in(backend.labels_language(p.label_language))
    deprecated = vocab.deprecated
    chat = backend.chat_prompt()
    for doc in corpus:
        labels = [pref[s] for s in doc.subjects if pref[s] and not deprecated[s]]
        if labels:
            prompt, cut = chat.render(doc.text)
            answer = json.dumps(
                list(dict.fromkeys(labels))[: p.terms], ensure_ascii=False
            )
            yield Example(prompt, answer, cut)


def read_examples(path: Path) -> list[Example]:
    """The prompt/completion records of a JSONL file (`indexer finetune-data`)."""
    out = []
    for number, line in enumerate(strict_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not all(
            isinstance(record.get(k), str) for k in ("prompt", "completion")
        ):
            raise InputError(
                f"{where}: each line must be an object with the strings "
                "'prompt' and 'completion'"
            )
        out.append(Example(record["prompt"], record["completion"]))
    return out


@dataclass
class LoraSettings:
    """How a generator is fine-tuned: a bounded number of optimiser steps."""

    steps: int = 200
    batch_size: int = 8
    learning_rate: float = 2e-4
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    max_length: int = 1024  # longer examples are left out, not cut
    seed: int = 0
    device: str = "auto"

    def check(self) -> None:
        """ConfigError naming each setting out of its range."""
        wrong = [
            f"{name} = {value} ({rule})"
            for name, value, ok, rule in (
                ("steps", self.steps, self.steps >= 1, "at least 1"),
                ("batch_size", self.batch_size, self.batch_size >= 1, "at least 1"),
                ("rank", self.rank, self.rank >= 1, "the LoRA rank: at least 1"),
                ("alpha", self.alpha, self.alpha > 0, "above 0"),
                (
                    "learning_rate",
                    self.learning_rate,
                    math.isfinite(self.learning_rate) and self.learning_rate > 0,
                    "above 0",
                ),
                ("dropout", self.dropout, 0 <= self.dropout < 1, "from 0 to below 1"),
                ("max_length", self.max_length, self.max_length >= 2, "at least 2"),
            )
            if not ok
        ]
        if wrong:
            raise ConfigError("Fine-tuning settings out of range: " + "; ".join(wrong))


def tokenized(tokenizer, pairs: list[Example], max_length: int) -> list[tuple]:
    """(token ids, prompt length) of each example that fits `max_length`:
    the prompt as the generator encodes it (no special tokens added: the
    chat template has its own; a document's control tokens, marked by
    `chat_text`, read as text), then the answer (all text) and the end of
    the turn as the chat template writes it."""
    end = end_of_turn(tokenizer)
    out = []
    for pair in pairs:
        prompt = prompt_text.encode(tokenizer, pair.prompt)
        answer = prompt_text.text_ids(tokenizer, pair.completion)
        ids = [*prompt, *answer, *end]
        if len(ids) <= max_length:
            out.append((ids, len(prompt)))
    return out


def padded(rows: list[tuple], pad_id: int, device: str):
    """(input ids, attention mask, labels) of a batch, right-padded; the
    labels skip the prompts and the padding."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORED, dtype=torch.long)
    for row, (tokens, prompt) in enumerate(rows):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
        labels[row, prompt : len(tokens)] = torch.tensor(tokens[prompt:])
    return ids.to(device), mask.to(device), labels.to(device)


def fine_tune(
    model_name: str, pairs: list[Example], settings: LoraSettings, target: Path
) -> dict:
    """Train a LoRA adapter on `model_name` for `settings.steps` batches of
    `pairs` (in shuffled passes) and save it to the directory `target`,
    replaced whole; returns the training statistics."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm

    from indexer.neural.encoder import pick_device
    from indexer.neural.llm import (
        autocast,
        check_training_memory,
        load_decoder,
        load_tokenizer,
    )

    settings.check()
    where = f"Fine-tuning model '{model_name}'"
    model, device = resolve_model(model_name), pick_device(settings.device)
    tokenizer = load_tokenizer(model)
    rows = tokenized(tokenizer, pairs, settings.max_length)
    if not rows:
        raise ConfigError(
            f"{where}: none of the {len(pairs)} examples fits max_length = "
            f"{settings.max_length} tokens: raise it"
        )
    check_training_memory(
        where, model, device, settings.batch_size, settings.max_length
    )
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    lm = load_decoder(model, device, dtype="float32", causal_lm=True)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        adapted = get_peft_model(lm, config)
    except ValueError as exc:
        raise ConfigError(
            f"{where}: LoRA targets {', '.join(settings.targets)} do not fit this "
            f"model: {str(exc).splitlines()[0]}"
        ) from None
    adapted.train()
    trainable = [q for q in adapted.parameters() if q.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=settings.learning_rate)
    losses: list[float] = []
    order: list[int] = []
    started = time.perf_counter()
    bar = tqdm(range(settings.steps), desc="Fine-tuning", unit=" steps", disable=None)
    for step in bar:
        while len(order) < settings.batch_size:  # passes over shuffled examples
            order += rng.permutation(len(rows)).tolist()
        batch, order = order[: settings.batch_size], order[settings.batch_size :]
        ids, mask, labels = padded(
            [rows[i] for i in batch], tokenizer.pad_token_id, device
        )
        with autocast(device, "auto"):
            loss = adapted(input_ids=ids, attention_mask=mask, labels=labels).loss
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigError(
                f"{where}: the loss is {value} at step {step + 1}: lower the "
                "learning rate"
            )
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        losses.append(value)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
    bar.close()
    window = max(1, min(10, len(losses) // 2))
    info = {
        "base_model": model.manifest(),
        "settings": asdict(settings),
        "device": device,
        "examples": len(rows),
        # which documents the generator has seen: a fusion must not score
        # them as new to it (cross-fitting)
        "examples_digest": examples_digest(pairs),
        "left_out": len(pairs) - len(rows),  # longer than max_length
        "steps": len(losses),
        "loss_first": float(np.mean(losses[:window])),
        "loss_last": float(np.mean(losses[-window:])),
        "losses": [round(x, 4) for x in losses],
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_adapter(adapted, info, target)
    return info


def examples_digest(pairs: list[Example]) -> str:
    """sha256 of the prompts and answers trained on, in their order."""
    sha = hashlib.sha256()
    for pair in pairs:
        for text in (pair.prompt, pair.completion):
            data = text.encode("utf-8", "surrogatepass")
            sha.update(len(data).to_bytes(8, "little") + data)
    return sha.hexdigest()


def save_adapter(adapted, info: dict, target: Path) -> None:
    """The adapter (safetensors) and `info` (finetune.json) in a new
    directory `.NAME.TAG` beside `target`; `target` then becomes a link to
    it, replaced in one atomic step (os.replace), so that a save killed at
    any point leaves `target` a whole adapter, the previous or the new one.
    The previous version is removed after the swap. (A `target` that is a
    directory, saved before adapters were links, is moved aside just
    before the swap: the one moment a kill leaves no adapter there.)"""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    fresh = target.parent / f".{target.name}.{tag}"
    link = target.parent / f".{target.name}.{tag}.link"
    previous: Path | None = None
    moved = False
    try:
        adapted.save_pretrained(str(fresh), safe_serialization=True)
        text = json.dumps(info, indent=2, allow_nan=False)
        (fresh / ADAPTER_INFO).write_text(text)
        os.symlink(fresh.name, link)
        if target.is_symlink():
            previous = target.parent / os.readlink(target)
        elif target.exists():
            previous = target.parent / f".{target.name}.{tag}.old"
            os.rename(target, previous)
            moved = True
        os.replace(link, target)
    except BaseException:
        if moved and not target.exists():
            os.rename(previous, target)  # the previous adapter back in place
        link.unlink(missing_ok=True)
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    if previous is not None and previous.name.startswith(f".{target.name}."):
        shutil.rmtree(previous, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """python -m backends.llm_generate.finetune DATA.jsonl ADAPTER_DIR ...:
    train an adapter on `indexer finetune-data` output (the GPU path)."""
    import argparse
    import sys

    from indexer.errors import IndexerError

    parser = argparse.ArgumentParser(
        prog="python -m backends.llm_generate.finetune",
        description="Train a LoRA adapter for llm_generate on prompt/completion "
        "JSONL (indexer finetune-data); load it with adapter = ADAPTER_DIR.",
    )
    parser.add_argument("data", type=Path, help="JSONL of prompts and completions")
    parser.add_argument("adapter", type=Path, help="directory to write (replaced)")
    parser.add_argument("--model", default="smollm2", help="the generator's model")
    defaults = LoraSettings()
    for name in ("steps", "batch_size", "rank", "alpha", "max_length", "seed"):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=int, default=getattr(defaults, name))
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--device", default=defaults.device, help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    settings = LoraSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        rank=args.rank,
        alpha=args.alpha,
        max_length=args.max_length,
        seed=args.seed,
        device=args.device,
    )
    try:
        settings.check()
    except IndexerError as exc:
        message = exc.message
        for name in ("batch_size", "learning_rate", "max_length"):
            message = message.replace(name, name.replace("_", "-"))
        parser.error(message)  # a usage error: exit 2
    try:
        pairs = read_examples(args.data)
        info = fine_tune(args.model, pairs, settings, args.adapter)
    except OSError as exc:
        print(f"Error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 1
    except IndexerError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return 1
    print(
        f"Adapter in {args.adapter}: {info['examples']} examples, {info['steps']} "
        f"steps, loss {info['loss_first']:.3f} -> {info['loss_last']:.3f} in "
        f"{info['seconds']} s on {info['device']}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
