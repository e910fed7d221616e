"""Who answers llm_rank's yes/no question about each candidate: the causal LM
in this process (`engine = local`, with the shared prefix's KV cache) or a
System One server (`engine = systemone`: the document is the `state`, each
candidate a `noul` question). Either gives one log-odds of yes per candidate,
which the calibration learns from the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.llm_rank.prompts import (
    ConceptText,
    PromptBuilder,
    candidate_text,
    question_text,
)

CHARS_PER_TOKEN = 4  # how a server's document is cut to max_doc_tokens


@dataclass
class Judgement:
    """The answers for one document's candidates, and what the prompt held."""

    log_odds: np.ndarray
    document_tokens: int = 0
    truncated: bool = False
    prefix_tokens: int = 0
    suffix_tokens: int = 0


class LocalJudge:
    """The causal LM loaded in this process."""

    def __init__(
        self,
        lm,
        prompts: PromptBuilder,
        yes: list[int],
        no: list[int],
        batch_size: int,
        prefix_cache: bool,
    ):
        self.lm, self.prompts = lm, prompts
        self.yes, self.no = yes, no
        self.batch_size, self.prefix_cache = batch_size, prefix_cache

    @property
    def identity(self) -> str:
        return self.lm.identity

    def judge(
        self, document: str, examples: list[str], concepts: list[ConceptText]
    ) -> Judgement:
        prompt = self.prompts.build(document, examples, concepts)
        logits = self.lm.yes_no_logits(
            prompt.prefix,
            prompt.suffixes,
            self.yes,
            self.no,
            self.batch_size,
            reuse_prefix=self.prefix_cache,
        )
        return Judgement(
            logits,
            prompt.document_tokens,
            prompt.truncated,
            len(prompt.prefix),
            sum(len(s) for s in prompt.suffixes),
        )


class ServerJudge:
    """A System One server (`indexer.neural.systemone.SystemOneClient`)."""

    def __init__(
        self,
        client,
        templates: dict[str, str],
        context,
        max_doc_tokens: int,
        tokenizer=None,
    ):
        self.client = client
        self.templates = templates
        self.context = set(context)
        self.max_doc_tokens = max_doc_tokens
        self.max_chars = max_doc_tokens * CHARS_PER_TOKEN
        self.tokenizer = tokenizer

    @property
    def identity(self) -> str:
        return self.client.identity

    def judge(
        self, document: str, examples: list[str], concepts: list[ConceptText]
    ) -> Judgement:
        from indexer.neural.systemone import log_odds

        state, truncated = self.state(document)
        questions = [self.question(c) for c in concepts]
        p_yes = self.client.noul(state, questions)
        return Judgement(log_odds(p_yes), truncated=truncated)

    def question(self, concept: ConceptText) -> str:
        """The `noul` question's instructions for one candidate."""
        return question_text(
            self.templates, candidate_text(self.templates, self.context, concept)
        )

    def state(self, document: str) -> tuple[str, bool]:
        """The document as the prompt shows it (runs of white space as one
        space), cut to max_doc_tokens tokens of the model's tokenizer as the
        local engine cuts it, or without one at a word to about as many
        characters as CHARS_PER_TOKEN says."""
        if self.tokenizer is not None:
            return self._cut_to_tokens(document)
        text = " ".join(document.split())
        if len(text) <= self.max_chars:
            return text, False
        if not self.max_chars:  # as the local prompt: no document at all
            return "", True
        cut = text[: self.max_chars + 1].rsplit(" ", 1)[0]
        return cut + " ...", True

    def _cut_to_tokens(self, document: str) -> tuple[str, bool]:
        ids = self.tokenizer(
            document[: self.max_doc_tokens * 12], add_special_tokens=False
        )["input_ids"]
        if len(ids) <= self.max_doc_tokens:
            return " ".join(document.split()), False
        shown = self.tokenizer.decode(
            ids[: self.max_doc_tokens], skip_special_tokens=True
        )
        cut = shown.strip() + (" ..." if self.max_doc_tokens else "")
        return " ".join(cut.split()), True
