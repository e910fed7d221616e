"""Who writes llm_generate's subject terms: the causal LM in this process
(`engine = local`, greedy, with its chat template) or a chat-completions
server (`engine = chat`, temperature 0). Either cuts each document to about
`max_doc_tokens` tokens, asks with the same messages and returns the
answer's text. `ChatPrompt` renders what the local model reads from its
tokenizer alone: suggestions and fine-tuning data share it."""

from __future__ import annotations

from dataclasses import dataclass

from backends.llm_generate.prompts import TermsPrompt
from indexer.errors import ConfigError
from indexer.neural.causal_lm import chat_text

CHARS_PER_TOKEN = 4  # how a server's document is cut to max_doc_tokens


@dataclass
class Answer:
    """A model's answer for one document, and whether the document was cut."""

    text: str
    truncated: bool = False


def cut_document(tokenizer, document: str, limit: int) -> tuple[str, bool]:
    """`document` (runs of white space as one space) cut to its first `limit`
    tokens of `tokenizer`, and whether it was cut."""
    text = " ".join(document.split())
    ids = tokenizer(text[: limit * 12], add_special_tokens=False)["input_ids"]
    if len(ids) <= limit and len(text) <= limit * 12:
        return text, False
    shown = tokenizer.decode(ids[:limit], skip_special_tokens=True)
    return shown.strip() + " ...", True


class ChatPrompt:
    """The text a chat model reads for one document: the document cut to
    `max_doc_tokens` tokens (at most what the context window `window` leaves
    beside the prompt and the answer; None: no such limit), in the prompt's
    messages, rendered with the model's chat template. Needs the tokenizer
    alone, so fine-tuning data shows the model exactly what `suggest` sends."""

    def __init__(
        self,
        tokenizer,
        window: int | None,
        prompt: TermsPrompt,
        max_doc_tokens: int,
        max_new_tokens: int,
    ):
        self.tokenizer, self.prompt = tokenizer, prompt
        self.max_new_tokens = max_new_tokens
        self.max_doc_tokens = max_doc_tokens
        if window is not None:
            self.max_doc_tokens = min(max_doc_tokens, self._room(window))

    def _room(self, window: int) -> int:
        """Tokens the context window leaves for the document."""
        rendered = chat_text(self.tokenizer, self.prompt.messages(""))
        used = len(self.tokenizer(rendered, add_special_tokens=False)["input_ids"])
        room = window - used - self.max_new_tokens
        if room <= 0:
            raise ConfigError(
                f"The prompt and max_new_tokens = {self.max_new_tokens} do not fit "
                f"the model's {window}-token context window: lower "
                "max_new_tokens or shorten the prompt"
            )
        return room

    def cut(self, document: str) -> tuple[str, bool]:
        """The document cut to `max_doc_tokens` tokens, and whether it was."""
        return cut_document(self.tokenizer, document, self.max_doc_tokens)

    def render(self, document: str) -> tuple[str, bool]:
        """The prompt text for `document`, and whether the document was cut."""
        text, truncated = self.cut(document)
        return chat_text(self.tokenizer, self.prompt.messages(text)), truncated


class LocalGenerator:
    """The causal LM loaded in this process (`indexer.neural.causal_lm`)."""

    def __init__(self, lm, prompt: TermsPrompt, max_doc_tokens: int, max_new_tokens):
        self.lm, self.prompt = lm, prompt
        self.max_new_tokens = max_new_tokens
        self.chat = ChatPrompt(
            lm.tokenizer, lm.max_positions, prompt, max_doc_tokens, max_new_tokens
        )
        self.max_doc_tokens = self.chat.max_doc_tokens

    @property
    def identity(self) -> str:
        return self.lm.identity

    def answers(self, documents: list[str]) -> list[Answer]:
        out = []
        for document in documents:
            text, truncated = self.chat.render(document)
            out.append(Answer(self.lm.complete(text, self.max_new_tokens), truncated))
        return out

    def cut(self, document: str) -> tuple[str, bool]:
        """The document (runs of white space as one space) cut to its first
        `max_doc_tokens` tokens."""
        return self.chat.cut(document)


class ServerGenerator:
    """A chat-completions server (`indexer.neural.chat.ChatClient`)."""

    def __init__(
        self,
        client,
        prompt: TermsPrompt,
        max_doc_tokens: int,
        max_new_tokens,
        tokenizer=None,
    ):
        self.client, self.prompt = client, prompt
        self.max_new_tokens = max_new_tokens
        self.max_doc_tokens = max_doc_tokens
        self.max_chars = max_doc_tokens * CHARS_PER_TOKEN
        self.tokenizer = tokenizer

    @property
    def identity(self) -> str:
        return self.client.identity

    def answers(self, documents: list[str]) -> list[Answer]:
        cuts = [self.cut(document) for document in documents]
        texts = self.client.complete(
            [self.prompt.messages(text) for text, _ in cuts], self.max_new_tokens
        )
        return [
            Answer(text, truncated)
            for text, (_, truncated) in zip(texts, cuts, strict=True)
        ]

    def cut(self, document: str) -> tuple[str, bool]:
        """The document (runs of white space as one space) cut to its first
        `max_doc_tokens` tokens as the local engine cuts it, with the served
        model's tokenizer when it is on this machine; else at a word to about
        as many tokens (CHARS_PER_TOKEN)."""
        if self.tokenizer is not None:
            return cut_document(self.tokenizer, document, self.max_doc_tokens)
        text = " ".join(document.split())
        if len(text) <= self.max_chars:
            return text, False
        cut = text[: self.max_chars + 1].rsplit(" ", 1)[0]
        return cut + " ...", True
