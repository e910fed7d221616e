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
from indexer.neural.prompt_text import cut_document


@dataclass
class Answer:
    """A model's answer for one document, and whether the document was cut."""

    text: str
    truncated: bool = False


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
        cut = cut_document(document, self.max_doc_tokens, self.tokenizer)
        return cut.text, cut.truncated

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
        """The document cut to `max_doc_tokens` tokens as the local engine
        cuts it (`cut_document`: with the served model's tokenizer when it is
        on this machine), and whether it was."""
        cut = cut_document(document, self.max_doc_tokens, self.tokenizer)
        return cut.text, cut.truncated
