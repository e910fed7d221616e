"""Who writes llm_generate's subject terms: the causal LM in this process
(`engine = local`, greedy, with its chat template) or a chat-completions
server (`engine = chat`, temperature 0). Either cuts each document to about
`max_doc_tokens` tokens, asks with the same messages and returns the
answer's text."""

from __future__ import annotations

from dataclasses import dataclass

from backends.llm_generate.prompts import TermsPrompt
from indexer.errors import ConfigError

CHARS_PER_TOKEN = 4  # how a server's document is cut to max_doc_tokens


@dataclass
class Answer:
    """A model's answer for one document, and whether the document was cut."""

    text: str
    truncated: bool = False


class LocalGenerator:
    """The causal LM loaded in this process (`indexer.neural.causal_lm`)."""

    def __init__(self, lm, prompt: TermsPrompt, max_doc_tokens: int, max_new_tokens):
        self.lm, self.prompt = lm, prompt
        self.max_new_tokens = max_new_tokens
        self.max_doc_tokens = min(max_doc_tokens, self._room_for_document())

    @property
    def identity(self) -> str:
        return self.lm.identity

    def _room_for_document(self) -> int:
        """Tokens the context window leaves for the document."""
        rendered = self.lm.tokenizer.apply_chat_template(
            self.prompt.messages(""), tokenize=False, add_generation_prompt=True
        )
        room = self.lm.max_positions - len(self.lm.encode(rendered))
        room -= self.max_new_tokens
        if room <= 0:
            raise ConfigError(
                f"The prompt and max_new_tokens = {self.max_new_tokens} do not fit "
                f"the model's {self.lm.max_positions}-token context window: lower "
                "max_new_tokens or shorten the prompt"
            )
        return room

    def answers(self, documents: list[str]) -> list[Answer]:
        out = []
        for document in documents:
            text, truncated = self.cut(document)
            answer = self.lm.generate(self.prompt.messages(text), self.max_new_tokens)
            out.append(Answer(answer, truncated))
        return out

    def cut(self, document: str) -> tuple[str, bool]:
        """The document (runs of white space as one space) cut to its first
        `max_doc_tokens` tokens."""
        text = " ".join(document.split())
        ids = self.lm.encode(text[: self.max_doc_tokens * 12])
        if len(ids) <= self.max_doc_tokens and len(text) <= self.max_doc_tokens * 12:
            return text, False
        return self.lm.decode(ids[: self.max_doc_tokens]).strip() + " ...", True


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
        text = " ".join(document.split())
        if self.tokenizer is not None:
            return self._cut_to_tokens(text)
        if len(text) <= self.max_chars:
            return text, False
        cut = text[: self.max_chars + 1].rsplit(" ", 1)[0]
        return cut + " ...", True

    def _cut_to_tokens(self, text: str) -> tuple[str, bool]:
        limit = self.max_doc_tokens
        ids = self.tokenizer(text[: limit * 12], add_special_tokens=False)["input_ids"]
        if len(ids) <= limit and len(text) <= limit * 12:
            return text, False
        shown = self.tokenizer.decode(ids[:limit], skip_special_tokens=True)
        return shown.strip() + " ...", True
