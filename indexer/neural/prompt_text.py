"""The text of a causal LM's prompts, shared by every engine of the LLM
backends (in this process or on a server): one document cutter, and control
tokens in a document encoded as text.

`cut_document` cuts a document to its first `limit` tokens of the model's
tokenizer (or, when the tokenizer is not on this machine, at a word to about
`CHARS_PER_TOKEN` characters per token): the local and the served engine of
a model then show it the same document.

A document that holds a chat template's control tokens (`<|im_end|>`,
`<|im_start|>assistant`) must not open or close turns of the prompt. `as_text`
marks them in user text before the template is rendered, and `encode` reads
the rendered prompt with the marked ones as plain text and the template's own
as control tokens: what `transformers`' `sanitize_control_tokens` does, and
what a server that escapes user text sends its model.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from dataclasses import dataclass

#: without the model's tokenizer, a document is cut to about this many
#: characters per token of its budget
CHARS_PER_TOKEN = 4
#: text beyond this many characters per token of the budget is never read:
#: no tokenizer makes tokens that long, and encoding it would cost time
MAX_CHARS_PER_TOKEN = 12
_START, _END = "\ue000", "\ue001"  # private-use characters around marked tokens
_MARKED = re.compile(f"{_START}([^{_START}{_END}]*){_END}|[{_START}{_END}]")


@dataclass(frozen=True)
class Cut:
    """A document as a prompt shows it."""

    text: str  # runs of white space as one space; " ..." after a cut
    truncated: bool
    tokens: int  # tokens of the text shown (an estimate without a tokenizer)


def cut_document(document: str, limit: int, tokenizer=None) -> Cut:
    """`document` (runs of white space as one space) cut to its first `limit`
    tokens of `tokenizer` (control tokens in it count as text), or without
    one at a word to about `limit * CHARS_PER_TOKEN` characters."""
    text = " ".join(document.split())
    if tokenizer is None:
        chars = limit * CHARS_PER_TOKEN
        if len(text) <= chars:
            return Cut(text, False, -(-len(text) // CHARS_PER_TOKEN))
        if not limit:
            return Cut("", True, 0)
        return Cut(text[: chars + 1].rsplit(" ", 1)[0] + " ...", True, limit)
    window = limit * MAX_CHARS_PER_TOKEN
    ids = text_ids(tokenizer, text[:window])
    if len(ids) <= limit and len(text) <= window:
        return Cut(text, False, len(ids))
    if not limit:
        return Cut("", True, 0)
    shown = tokenizer.decode(ids[:limit], skip_special_tokens=True)
    return Cut(" ".join(shown.split()) + " ...", True, min(limit, len(ids)))


def text_ids(tokenizer, text: str) -> list[int]:
    """Token ids of `text` with every token read as text, none as control."""
    return list(
        tokenizer(text, add_special_tokens=False, split_special_tokens=True)[
            "input_ids"
        ]
    )


def control_tokens(tokenizer) -> tuple[str, ...]:
    """The tokens a prompt's template writes to open and close turns: the
    tokenizer's special tokens and the added tokens its chat template uses
    (transformers' own choice, where it has one)."""
    template = getattr(tokenizer, "chat_template", None)
    own = getattr(tokenizer, "_get_control_tokens", None)
    if own is not None and isinstance(template, str):
        try:
            return tuple(own(template))
        except Exception:  # noqa: BLE001 - a private helper: fall back to ours
            pass
    added = getattr(tokenizer, "added_tokens_decoder", {}).values()
    return tuple(
        token.content
        for token in added
        if token.special
        or (
            isinstance(template, str)
            and token.content in template
            and not token.content.isspace()
        )
    )


def as_text(tokenizer, text: str) -> str:
    """`text` with its control tokens marked, so that `encode` reads them as
    text when a prompt's template has placed `text` in a message."""
    text = text.replace(_START, "").replace(_END, "")
    pattern = _control_pattern(tokenizer)
    if pattern is None:
        return text
    return pattern.sub(lambda m: f"{_START}{m.group(0)}{_END}", text)


_patterns: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _control_pattern(tokenizer) -> re.Pattern | None:
    """A regex of the tokenizer's control tokens, longest first (computed
    once per tokenizer: a tokenizer may have thousands of added tokens)."""
    try:
        return _patterns[tokenizer]
    except (KeyError, TypeError):
        pass
    tokens = sorted(set(control_tokens(tokenizer)), key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, tokens))) if tokens else None
    with contextlib.suppress(TypeError):
        _patterns[tokenizer] = pattern
    return pattern


def encode(tokenizer, prompt: str) -> list[int]:
    """Token ids of a rendered prompt (no special tokens added): the tokens
    that `as_text` marked are text, the template's own are control tokens."""
    pieces = _MARKED.split(prompt)
    if len(pieces) == 1:
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    newline = list(tokenizer("\n", add_special_tokens=False)["input_ids"])
    ids = list(tokenizer(pieces[0], add_special_tokens=False)["input_ids"])
    for i, piece in enumerate(pieces[1:], start=1):
        if piece:
            ids += _piece_ids(tokenizer, piece, i % 2 == 1, newline)
    return ids


def _piece_ids(tokenizer, piece: str, literal: bool, newline: list[int]):
    """A piece from the middle of a prompt, encoded after a newline (then
    dropped) so that a SentencePiece tokenizer adds no word-start space."""

    def ids(text: str) -> list[int]:
        if literal:
            return text_ids(tokenizer, text)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    after = ids("\n" + piece)
    if newline and after[: len(newline)] == newline:
        return after[len(newline) :]
    return ids(piece)
