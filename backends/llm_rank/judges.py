"""Who answers llm_rank's yes/no question about each candidate: the causal LM
in this process (`engine = local`, with the shared prefix's KV cache) or a
System One server (`engine = systemone`: the document is the `state`, each
candidate a `noul` question). Either gives one log-odds of yes per candidate,
which the calibration learns from the same way.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from backends.llm_rank.prompts import (
    ConceptText,
    PromptBuilder,
    candidate_text,
    question_text,
)
from indexer.errors import ServiceError
from indexer.neural.prompt_text import Cut, cut_document


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

    def judge_many(self, requests: list[tuple]) -> list[Judgement | ServiceError]:
        """`judge` of each (document, examples, concepts), one at a time (the
        model runs one forward pass at a time anyway)."""
        return [self.judge(*request) for request in requests]


class ServerJudge:
    """A System One server (`indexer.neural.systemone.SystemOneClient`); the
    documents of a batch are judged concurrently, up to `concurrency`
    requests in flight."""

    def __init__(
        self,
        client,
        templates: dict[str, str],
        context,
        max_doc_tokens: int,
        tokenizer=None,
        concurrency: int = 4,
    ):
        self.client = client
        self.templates = templates
        self.context = set(context)
        self.max_doc_tokens = max_doc_tokens
        self.tokenizer = tokenizer
        self._pool = ThreadPoolExecutor(max(1, concurrency), "systemone-documents")

    @property
    def identity(self) -> str:
        return self.client.identity

    def judge(
        self, document: str, examples: list[str], concepts: list[ConceptText]
    ) -> Judgement:
        from indexer.neural.systemone import log_odds

        cut = self.state(document)
        questions = [self.question(c) for c in concepts]
        p_yes = self.client.noul(cut.text, questions)
        return Judgement(log_odds(p_yes), cut.tokens, cut.truncated)

    def judge_many(self, requests: list[tuple]) -> list[Judgement | ServiceError]:
        """`judge` of each (document, examples, concepts), the documents'
        requests in flight together (the client bounds them to its
        `concurrency`); a document whose request failed gets its error."""
        futures = [self._pool.submit(self.judge, *request) for request in requests]
        out: list[Judgement | ServiceError] = []
        for future in futures:
            try:
                out.append(future.result())
            except ServiceError as exc:
                out.append(exc)
        return out

    def question(self, concept: ConceptText) -> str:
        """The `noul` question's instructions for one candidate."""
        return question_text(
            self.templates, candidate_text(self.templates, self.context, concept)
        )

    def state(self, document: str) -> Cut:
        """The document as the prompt shows it, cut to max_doc_tokens as the
        local engine cuts it (`cut_document`: with the model's tokenizer when
        it is on this machine)."""
        return cut_document(document, self.max_doc_tokens, self.tokenizer)
