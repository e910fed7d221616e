"""Zero-shot generate-then-map: an instruction-following LLM writes a
document's subject terms as a JSON list, and each term is mapped to concepts
of the vocabulary (its label as written, its label stemmed, else its nearest
concepts in the `embed` concept index). Nothing outside the vocabulary, and
no deprecated concept, can be suggested.

The model runs in this process (`engine = local`: greedy `generate` with its
chat template) or behind an OpenAI-compatible server (`engine = chat`:
`POST /v1/chat/completions`, temperature 0). A concept's score is a logistic
function of how its terms were found: the best rank of a term behind it, the
kind of match, the embedding similarity, how many terms and how many other
concepts share them. Hand-set weights score before training; `train` fits
them on `calibration_docs` indexed documents and saves them as JSON.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backends.embed import EmbedBackend
from backends.llm_generate.generators import (
    ChatPrompt,
    LocalGenerator,
    ServerGenerator,
)
from backends.llm_generate.mapping import (
    EMBEDDING,
    EXACT,
    KINDS,
    STEMMED,
    LabelIndex,
    TermMapper,
    TermMatch,
)
from backends.llm_generate.prompts import TermsPrompt
from backends.llm_generate.terms import parse_terms
from indexer.backend import LEXICAL, Backend
from indexer.errors import ConfigError, InputError, NotTrainedError, ServiceError
from indexer.linear import LinearScorer
from indexer.neural.http import ModelServerParams
from indexer.params import param
from indexer.suggestion import SuggestionBatch

ENGINES = ("local", "chat")
FEATURES = (
    "bias",
    "inverse_rank",
    "exact",
    "stemmed",
    "embedding",
    "similarity",
    "log_terms",
    "unambiguous",
)
# Before training: a label the model wrote as it is, early in its list,
# scores high (0.94 as its first term, 0.79 as its tenth); an embedding
# neighbour scores by its similarity (0.56 at 0.8 for the first term, 0.12
# at 0.5 for the tenth, three neighbours each).
DEFAULT_WEIGHTS = {
    "bias": -3.0,
    "inverse_rank": 1.5,
    "exact": 3.0,
    "stemmed": 2.5,
    "embedding": -1.5,
    "similarity": 3.0,
    "log_terms": 1.0,
    "unambiguous": 0.5,
}
RECENT = 64  # analyses kept for `explain` after `suggest`
CHAT_BATCH = 32  # documents handed to the server's `concurrency` requests at once


@dataclass
class LlmGenerateParams(ModelServerParams):
    model: str = param(
        "auto",
        "instruction-following causal LM with a chat template: smollm2, a local "
        "directory or a hub id (auto: smollm2); with engine = chat, the model's "
        "name on the server",
    )
    engine: str = param(
        "local",
        "who writes the terms: local (the model in this process) or chat (an "
        "OpenAI-compatible chat-completions server at url)",
        choices=ENGINES,
    )
    terms: int = param(10, "subject terms asked for and kept per document", min=1)
    max_new_tokens: int = param(128, "tokens the model may write per document", min=4)
    max_doc_tokens: int = param(256, "tokens of the document in the prompt", min=8)
    prompt_language: str = param(
        "", "language of the prompt (built in: en, fi, de, sv; default: the project's)"
    )
    system_prompt: str = param(
        "", "system message: {terms} (\\n for a newline; default per language)"
    )
    user_prompt: str = param(
        "", "user message: {document} {terms} (default per language)"
    )
    label_language: str = param(
        "", "language of the labels matched and embedded (default: the project's)"
    )
    map_candidates: int = param(
        3, "concepts an unmatched term maps to by embedding similarity", min=1
    )
    min_similarity: float = param(
        0.5,
        "embedding similarity a term needs to map to a concept",
        min=-1.0,
        max=1.0,
    )
    embed_model: str = param("auto", "encoder of the embed concept index")
    calibration_docs: int = param(
        50, "training documents the score weights are fitted on", min=1
    )
    regularisation: float = param(
        1.0, "inverse regularisation C of the score weights", min=1e-6
    )
    device: str = param("auto", "auto, cpu or cuda")
    dtype: str = param(
        "auto",
        "local LLM weights (auto: bfloat16 on a GPU and on CPUs with native "
        "bfloat16 support, else float32)",
        choices=["auto", "float32", "bfloat16", "float16"],
    )
    adapter: str = param(
        "",
        "local: a LoRA adapter directory (peft, safetensors) trained on model, "
        "e.g. by backends.llm_generate.finetune; merged into the weights at load",
    )


@dataclass
class Analysis:
    """One document: the model's answer, its terms and the concepts they map to."""

    answer: str
    terms: list[str]
    ids: np.ndarray  # concepts, in the order their best term came
    x: np.ndarray  # (concepts, FEATURES)
    matches: dict[int, list[TermMatch]] = field(default_factory=dict)
    truncated: bool = False  # the document was cut to max_doc_tokens
    seconds: float = 0.0  # the model's time for this document


class LlmGenerateBackend(Backend):
    """Terms written by an LLM, mapped to the vocabulary (kind: lexical)."""

    name = "llm_generate"
    kind = LEXICAL
    Params = LlmGenerateParams
    needs_training = False
    # its training fits a few match-quality weights, nothing of the documents
    # (but a fine-tuned generator has seen them: see `cross_fit_refusal`)
    cross_fit = "reuse"

    def cross_fit_refusal(self) -> str:
        """Why this project cannot be a source of a cross-fitted fusion (''
        when it can): a generator fine-tuned on the training documents
        would score folds it has seen as if they were new."""
        if not self.params.adapter:
            return ""
        return (
            f"source '{self.project.id}' generates with the fine-tuned adapter "
            f"'{self.params.adapter}', which has seen the training documents "
            "that cross-fitting scores as unseen: set cross_fit = 0 and fit the "
            "fusion on a split the adapter was not trained on, or leave the "
            "adapter out of this project"
        )

    # -- parts ---------------------------------------------------------------
    @property
    def _where(self) -> str:
        return f"Project '{self.project.id}'"

    def _setup(self) -> None:
        p = self.params
        language = self.labels_language(p.label_language)
        embed_params = {
            "model": p.embed_model,
            "device": p.device,
            "candidates": p.map_candidates,
            "max_length": 32,  # terms are short
        }
        if p.label_language:
            embed_params["label_language"] = p.label_language
        embed = EmbedBackend(self.project, embed_params)
        embed.load_part(None)
        self._mapper = TermMapper(
            LabelIndex(self.project.vocab, language),
            embed,
            p.map_candidates,
            p.min_similarity,
        )
        self._generator = self._make_generator()
        self._recent: OrderedDict[str, Analysis] = OrderedDict()

    def _prompt(self) -> TermsPrompt:
        p = self.params
        try:
            return TermsPrompt(
                p.prompt_language or self.project.language,
                p.terms,
                p.system_prompt,
                p.user_prompt,
            )
        except ConfigError as exc:
            raise ConfigError(f"{self._where}: {exc.message}") from None

    def _model_name(self) -> str:
        return "smollm2" if self.params.model == "auto" else self.params.model

    def _adapter(self) -> str:
        """The adapter directory, relative to projects.cfg unless absolute."""
        p = self.params
        if not p.adapter:
            return ""
        if p.engine != "local":
            raise ConfigError(
                f"{self._where}: adapter needs engine = local (load it into the "
                "server, or serve the merged weights)"
            )
        path = Path(p.adapter).expanduser()
        sources = self.project.projects.config.sources
        if not path.is_absolute() and sources:
            path = Path(sources[0]).parent / path
        if not path.is_dir():
            raise ConfigError(f"{self._where}: adapter '{path}' is not a directory")
        # not resolved: the link that training swaps is read at each load
        return os.path.abspath(path)

    def _make_generator(self) -> LocalGenerator | ServerGenerator:
        p = self.params
        adapter = self._adapter()
        if p.engine == "chat":
            from indexer.neural.llm import local_tokenizer

            return ServerGenerator(
                self._chat_client(),
                self._prompt(),
                p.max_doc_tokens,
                p.max_new_tokens,
                local_tokenizer(p.model),
            )
        from indexer.neural.causal_lm import load_causal_lm

        name = self._model_name()
        try:
            lm = load_causal_lm(name, p.device, p.dtype, adapter)
        except ConfigError as exc:
            raise ConfigError(f"{self._where}: {exc.message}") from None
        if not lm.has_chat_template:
            raise self._no_chat_template(name)
        try:
            return LocalGenerator(
                lm, self._prompt(), p.max_doc_tokens, p.max_new_tokens
            )
        except ConfigError as exc:
            raise ConfigError(f"{self._where}: {exc.message}") from None

    def _no_chat_template(self, name: str) -> ConfigError:
        return ConfigError(
            f"{self._where}: model '{name}' has no chat template; llm_generate "
            "needs an instruction-following (chat) model"
        )

    def _chat_client(self):
        """The chat server of `url`, checked with one small request."""
        from indexer.neural.chat import ChatClient
        from indexer.neural.http import configured_server

        p, where = self.params, self._where
        server = configured_server(p, where)
        client = ChatClient(server, p.model, p.concurrency)
        try:
            client.check()
        except ServiceError as exc:
            raise ServiceError(f"{where}: {exc.message}") from None
        return client

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        self._setup()
        self._scorer = LinearScorer(FEATURES, dict(DEFAULT_WEIGHTS))
        if directory is None:
            return
        calibration = json.loads((directory / "calibration.json").read_text())
        trained_with = calibration.get("generator")
        if trained_with and trained_with != self._generator.identity:
            raise NotTrainedError(
                f"{self._where} was calibrated with the LLM '{trained_with}', but "
                f"is configured with '{self._generator.identity}': retrain with "
                f"`indexer train {self.project.id} CORPUS`"
            )
        self._scorer = LinearScorer(FEATURES, calibration["weights"])

    # -- terms and concepts --------------------------------------------------
    def analyse(self, texts: list[str], progress: bool = False) -> list[Analysis]:
        """The model's terms for each text and the concepts they map to."""
        from tqdm import tqdm

        if "_generator" not in self.__dict__:
            self._ensure_loaded()
        out = []
        bar = tqdm(
            total=len(texts),
            desc="Generating terms",
            unit=" docs",
            leave=False,
            disable=not progress or None,
        )
        step = CHAT_BATCH if self.params.engine == "chat" else 1
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            started = time.perf_counter()
            answers = self._generator.answers(chunk)
            seconds = (time.perf_counter() - started) / len(chunk)
            terms = [parse_terms(a.text, self.params.terms) for a in answers]
            for answer, found, matches in zip(
                answers, terms, self._mapper.map(terms), strict=True
            ):
                analysis = self._analysis(answer.text, found, matches)
                analysis.truncated, analysis.seconds = answer.truncated, seconds
                out.append(analysis)
            bar.update(len(chunk))
        bar.close()
        return out

    def _analysis(
        self, answer: str, terms: list[str], matches: list[TermMatch]
    ) -> Analysis:
        by_concept: dict[int, list[TermMatch]] = defaultdict(list)
        for match in sorted(matches, key=lambda m: m.rank):
            by_concept[match.concept].append(match)
        ids = list(by_concept)
        x = np.array([features(by_concept[c]) for c in ids], dtype=np.float32)
        return Analysis(
            answer,
            terms,
            np.asarray(ids, dtype=np.int64),
            x.reshape(len(ids), len(FEATURES)),
            dict(by_concept),
        )

    def scores(self, analysis: Analysis) -> np.ndarray:
        """The score of each concept of `analysis` (in the order of its ids)."""
        return self._scorer(analysis.x)

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        analyses = self.analyse(texts)
        with self._lock:
            for text, analysis in zip(texts, analyses, strict=True):
                self._recent[text] = analysis
                self._recent.move_to_end(text)
            while len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        rows = [(a.ids, self.scores(a)) for a in analyses]
        return SuggestionBatch.from_rows(rows, len(self.project.vocab))

    # -- training: the score weights -------------------------------------------
    def _train(self, corpus, directory: Path, jobs: int) -> dict:
        docs = [d for d in corpus if d.subjects]
        if not docs:
            raise InputError(
                "No training document has a subject of vocabulary "
                f"'{self.project.vocab.vocab_id}': nothing to calibrate on"
            )
        n = min(self.params.calibration_docs, len(docs))
        chosen = np.unique(np.linspace(0, len(docs) - 1, n).round().astype(int))
        calibration = [docs[i] for i in chosen]
        self._setup()
        self._scorer = LinearScorer(FEATURES, dict(DEFAULT_WEIGHTS))
        analyses = self.analyse([d.text for d in calibration], progress=True)
        x, y = training_rows(calibration, analyses)
        scorer = LinearScorer.fit(
            FEATURES, x, y, DEFAULT_WEIGHTS, self.params.regularisation
        )
        info = {
            "generator": self._generator.identity,
            "weights": scorer.weights,
            "calibration_documents": len(calibration),
            "candidates": int(len(y)),
            "positives": int(y.sum()),
        }
        (directory / "calibration.json").write_text(json.dumps(info, indent=2))
        gold = sum(len(d.subjects) for d in calibration)
        return {
            **info,
            "candidate_recall": float(y.sum()) / max(gold, 1),
            "terms_per_document": sum(len(a.terms) for a in analyses) / len(analyses),
            "documents_cut": sum(a.truncated for a in analyses),
            "llm_seconds_per_document": sum(a.seconds for a in analyses)
            / len(analyses),
        }

    # -- fine-tuning data ------------------------------------------------------
    def chat_prompt(self) -> ChatPrompt:
        """What the generator reads for a document, rendered from the model's
        tokenizer alone (the weights are not loaded): with engine = local,
        the document cut as the local engine cuts it; with engine = chat, as
        the server is sent it, rendered with the model's own chat template."""
        from indexer.neural.causal_lm import load_prompt_side

        p, name = self.params, self._model_name()
        if p.engine == "chat":
            from indexer.neural.llm import local_tokenizer

            tokenizer, window = local_tokenizer(name), None
            if tokenizer is None:
                raise ConfigError(
                    f"{self._where}: the tokenizer of model '{name}' is not on this "
                    "machine, so its prompts cannot be rendered: name a local "
                    "directory or a cached hub id as model"
                )
        else:
            tokenizer, window = load_prompt_side(name)
        if not getattr(tokenizer, "chat_template", None):
            raise self._no_chat_template(name)
        try:
            return ChatPrompt(
                tokenizer, window, self._prompt(), p.max_doc_tokens, p.max_new_tokens
            )
        except ConfigError as exc:
            raise ConfigError(f"{self._where}: {exc.message}") from None

    # -- explanations --------------------------------------------------------
    def explain(self, text: str, subjects) -> dict[int, dict]:
        """Per subject: the generated terms behind it, how each was matched,
        and the score."""
        self._ensure_loaded()
        with self._lock:
            analysis = self._recent.get(text)
        if analysis is None:
            analysis = self.analyse([text])[0]
        position = {int(c): i for i, c in enumerate(analysis.ids)}
        scores = self.scores(analysis)
        out = {}
        for subject in (int(s) for s in subjects):
            if subject not in position:
                continue
            out[subject] = {
                "source": "generated terms",
                "score": round(float(scores[position[subject]]), 4),
                "terms": [describe(m) for m in analysis.matches[subject]],
                "generated": analysis.terms,
            }
        return out


def features(matches: list[TermMatch]) -> list[float]:
    """One concept's features from the terms that mapped to it."""
    kinds = {m.kind for m in matches}
    best = next(kind for kind in KINDS if kind in kinds)
    similarities = [m.similarity for m in matches if m.kind == EMBEDDING]
    return [
        1.0,
        1.0 / min(m.rank for m in matches),
        float(best == EXACT),
        float(best == STEMMED),
        float(best == EMBEDDING),
        max(similarities, default=0.0),
        math.log1p(len({m.term for m in matches})),
        max(1.0 / m.senses for m in matches),
    ]


def training_rows(docs, analyses: list[Analysis]) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate's features, and whether it was a gold subject."""
    x = [a.x for a in analyses]
    y = [
        np.isin(a.ids, d.subjects).astype(np.float32)
        for d, a in zip(docs, analyses, strict=True)
    ]
    if not x:
        return np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.float32)
    return np.concatenate(x), np.concatenate(y)


def describe(match: TermMatch) -> dict:
    """A term behind a suggestion, as `--explain` shows it."""
    out: dict = {"term": match.term, "rank": match.rank, "match": match.kind}
    if match.kind == EMBEDDING:
        out["similarity"] = round(match.similarity, 3)
    else:
        out["label"] = match.label
    return out
