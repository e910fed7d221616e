"""Zero-shot LLM re-ranking: retrieve candidate concepts, let a causal LM judge
each one with a yes/no question, and combine its answer with the retrieval
scores. Any concept of the vocabulary can be suggested, and nothing outside it.

Candidates are the union of the `lexical` label matches, the `embed` concept
retrieval and, after training, the subjects of the nearest indexed documents
(`knn`), and, when asked for, the concepts that the terms an instruction
model writes map to (`generate`, an `llm_generate` with its hand-set
weights: one generation per document): those backends run inside this one,
on the same project. The LLM
reads one shared prefix (instruction, similar indexed documents with their
subjects, the document) whose KV cache is reused for every candidate's short
suffix, and P(yes) is the next-token probability of "yes" against "no".
Training holds out `calibration_docs` documents: the lexical weights and the
nearest-neighbour index learn from the rest, and a logistic regression over
[LLM log-odds, lexical, embed and knn scores] learned on the held-out ones turns
everything into a calibrated probability.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backends.embed import EmbedBackend
from backends.knn import KnnBackend
from backends.lexical import QUALIFIER, LexicalBackend
from backends.llm_generate import Analysis as Generation
from backends.llm_generate import LlmGenerateBackend
from backends.llm_generate import describe as described_term
from backends.llm_rank.judges import LocalJudge, ServerJudge
from backends.llm_rank.prompts import (
    ConceptText,
    PromptBuilder,
    TokenizerOnly,
    resolve_templates,
)
from indexer.analyzer import get_analyzer
from indexer.backend import LEXICAL, Backend
from indexer.errors import (
    ConfigError,
    DependencyError,
    InputError,
    NotTrainedError,
    ServiceError,
)
from indexer.neural.http import SERVER_SETTINGS, ModelServerParams
from indexer.params import param
from indexer.suggestion import SuggestionBatch

SOURCES = ("lexical", "embed", "knn", "generate")
DEFAULT_SOURCES = ("lexical", "embed", "knn")  # generate costs a generation
SCORES = ("lexical", "embed", "similarity", "knn", "generate")  # from sources
FEATURES = ("bias", "llm", *SCORES, "sources")
RETRIEVAL_FEATURES = tuple(f for f in FEATURES if f != "llm")
COMBINE = ("learned", "configured", "llm", "retrieval")
ENGINES = ("local", "systemone")
CONTEXT = ("alt", "broader", "note")
LLM = FEATURES.index("llm")
LLM_RANGE = (0.01, 0.99)  # quantiles of the calibration's LLM log-odds
LOGIT_CLIP = 20.0
log = logging.getLogger("indexer.llm_rank")


@dataclass
class LlmRankParams(ModelServerParams):
    model: str = param(
        "auto",
        "causal LM: smollm2, gemma-3-270m, a local directory or a hub id "
        "(auto: smollm2 for English, gemma-3-270m otherwise); with engine = "
        "systemone, the model's name on the server",
    )
    engine: str = param(
        "local",
        "who answers: local (the model in this process) or systemone (a System "
        "One decision server at url)",
        choices=ENGINES,
    )
    on_error: str = param(
        "fail",
        "systemone: when the server fails, fail (an error), or retrieval (suggest "
        "from the retrieval scores alone, and say so in the log)",
        choices=["fail", "retrieval"],
    )
    answer_forms: str = param(
        "all",
        "local: the answer tokens read, all (yes/no lower-case and capitalised, "
        "with and without a space) or exact (the first token of the words as "
        "written, as a decision server reads them)",
        choices=["all", "exact"],
    )
    prompt_style: str = param(
        "auto",
        "chat (the tokenizer's chat template), completion, or auto (chat when the "
        "tokenizer has a template)",
        choices=["auto", "chat", "completion"],
    )
    prompt_language: str = param(
        "", "language of the prompt (built in: en, fi, de, sv; default: the project's)"
    )
    prompt_template: str = param(
        "",
        "shared prompt prefix with the yes/no question: {instruction} {examples} "
        "{document} (\\n for a newline; default per language)",
    )
    candidate_template: str = param(
        "", "per-candidate text: {label} {context} {alt} {broader} {note}"
    )
    template_file: str = param(
        "", "JSON file that overrides any template key (flat or per language)"
    )
    yes_words: list[str] = param([], "answers that mean yes (default per language)")
    no_words: list[str] = param([], "answers that mean no (default per language)")
    candidates: int = param(30, "candidates the LLM judges per document", min=1)
    source_candidates: int = param(
        20, "candidates taken from each source before the union", min=1
    )
    sources: list[str] = param(
        list(DEFAULT_SOURCES),
        "candidate sources (knn only after training; generate: the terms an "
        "instruction model writes, one generation per document)",
        choices=SOURCES,
    )
    few_shot: int = param(
        0,
        "similar indexed documents shown as examples (after training); with the "
        "packaged models they cost 40% of the LLM time and add nothing measurable",
        min=0,
    )
    example_tokens: int = param(48, "tokens of each example document", min=4)
    max_doc_tokens: int = param(192, "tokens of the document in the prompt", min=0)
    label_context: list[str] = param(
        ["broader"],
        "what the prompt tells about each candidate besides its label",
        choices=CONTEXT,
    )
    contextual: bool = param(
        False,
        "subtract each candidate's answer for an empty document (the LLM's bias "
        "towards the label itself, computed once per concept)",
    )
    prune: bool = param(
        True,
        "after training, skip the LLM for candidates that cannot reach the top "
        "prune_depth whatever it answers",
    )
    prune_depth: int = param(10, "ranks the LLM's answers may reorder", min=1)
    prefix_cache: bool = param(
        True, "run the shared prefix once and reuse its KV cache for all candidates"
    )
    batch_size: int = param(32, "candidates scored in one forward pass", min=1)
    combine: str = param(
        "learned",
        "final score: learned (logistic regression after training, else "
        "configured), configured (llm_weight), llm (LLM alone), retrieval (no LLM)",
        choices=COMBINE,
    )
    llm_weight: float = param(
        0.5,
        "configured: weight of the LLM log-odds against the best retrieval score",
        min=0.0,
        max=1.0,
    )
    calibration_docs: int = param(
        100, "training documents held out to calibrate the scores", min=0
    )
    regularisation: float = param(
        1.0, "inverse regularisation C of the calibration", min=1e-6
    )
    embed_model: str = param("auto", "encoder of the embed source (concepts)")
    knn_model: str = param(
        "", "encoder of the knn source (documents; default: embed_model)"
    )
    label_language: str = param(
        "", "language of the labels embedded and shown (default: the project's)"
    )
    knn_k: int = param(10, "nearest indexed documents consulted", min=1)
    generate_model: str = param(
        "",
        "chat model of the generate source (default: model, loaded once for "
        "both; with engine = systemone, asked on the same server's chat "
        "completions)",
    )
    generate_terms: int = param(
        10, "terms the generate source's model writes per document", min=1
    )
    generate_tokens: int = param(
        128, "tokens the generate source's model may write per document", min=4
    )
    device: str = param("auto", "auto, cpu or cuda")
    dtype: str = param(
        "auto",
        "LLM weights (auto: bfloat16 on a GPU and on CPUs with native bfloat16 "
        "support, else float32)",
        choices=["auto", "float32", "bfloat16", "float16"],
    )


@dataclass
class Analysis:
    """Everything about one document's candidates (features, provenance)."""

    ids: np.ndarray  # candidate concept ids
    x: np.ndarray  # (candidates, FEATURES)
    sources: list[list[str]]  # which sources proposed each candidate
    neighbours: list[tuple[int, float]] = field(default_factory=list)
    examples: int = 0
    document_tokens: int = 0
    truncated: bool = False
    prefix_tokens: int = 0
    suffix_tokens: int = 0  # all candidates together
    judged: int = 0  # candidates the LLM was asked about
    llm_seconds: float = 0.0
    llm_failed: bool = False  # the server failed: retrieval scores alone
    generation: Generation | None = None  # the generate source's terms


class LlmRankBackend(Backend):
    """Retrieved candidates judged by a causal LM (kind: lexical, zero-shot)."""

    name = "llm_rank"
    kind = LEXICAL
    Params = LlmRankParams
    needs_training = False
    model_format = 2  # 2: the generate source's feature in the calibration

    # -- parts ---------------------------------------------------------------
    def _sub_params(self) -> dict[str, dict]:
        p = self.params
        embed = {
            "model": p.embed_model,
            "device": p.device,
            "candidates": p.source_candidates,
        }
        if p.label_language:
            embed["label_language"] = p.label_language
        knn = {
            "model": p.knn_model or p.embed_model,
            "device": p.device,
            "k": p.knn_k,
            "candidates": p.source_candidates,
        }
        generate = {
            "model": p.generate_model or self._llm_name(),
            "engine": "chat" if p.engine == "systemone" else "local",
            **{name: getattr(p, name) for name in SERVER_SETTINGS},
            "terms": p.generate_terms,
            "max_new_tokens": p.generate_tokens,
            "embed_model": p.embed_model,
            "device": p.device,
            "dtype": p.dtype,
        }
        for key in ("prompt_language", "label_language"):
            if getattr(p, key):
                generate[key] = getattr(p, key)
        return {
            "lexical": {"candidates": p.source_candidates},
            "embed": embed,
            "knn": knn,
            "generate": generate,
        }

    def _parts(self, directory: Path | None) -> None:
        """Instantiate the source backends; trained ones read `directory`/NAME."""
        params = self._sub_params()
        classes = {
            "lexical": LexicalBackend,
            "embed": EmbedBackend,
            "knn": KnnBackend,
            "generate": LlmGenerateBackend,  # never trained: hand-set weights
        }
        self._sources: dict[str, Backend] = {}
        self._waiting: Backend | None = None  # the generate source, not loaded
        for name in self.params.sources:
            sub_dir = directory / name if directory is not None else None
            if name == "knn" and (sub_dir is None or not sub_dir.is_dir()):
                continue  # knn needs indexed documents
            trained = sub_dir is not None and sub_dir.is_dir()
            backend = None
            try:
                backend = classes[name](self.project, params[name])
                backend.load_part(sub_dir if trained else None)
            except ServiceError as exc:
                if name != "generate" or self.params.on_error != "retrieval":
                    raise
                # its chat server failed the check at load: try again when
                # suggesting, and meanwhile suggest without its candidates
                log.warning("Project '%s': %s", self.project.id, exc.message)
                self._waiting = backend
                continue
            except ConfigError as exc:
                if name != "generate":
                    raise
                raise ConfigError(
                    f"{exc.message} (in the generate source, an llm_generate with "
                    "this project's settings: see the generate_* parameters)"
                ) from None
            self._sources[name] = backend

    @property
    def label_language(self) -> str:
        return self.params.label_language or self.project.language

    def _llm_name(self) -> str:
        if self.params.model != "auto":
            return self.params.model
        return "smollm2" if self.project.language.startswith("en") else "gemma-3-270m"

    def _load_llm(self) -> None:
        p, where = self.params, f"Project '{self.project.id}'"
        templates = self._templates(where)
        self._bias: dict[int, float] = {}  # concept id -> log-odds, empty document
        self._lm = None
        if p.engine == "systemone":
            self._judge = self._server_judge(templates, where)
            return
        from indexer.neural.causal_lm import load_causal_lm

        self._lm = lm = load_causal_lm(self._llm_name(), p.device, p.dtype)
        chat = p.prompt_style == "chat" or (
            p.prompt_style == "auto" and lm.has_chat_template
        )
        if chat and not lm.has_chat_template:
            raise ConfigError(
                f"{where}: prompt_style = chat, but model '{self._llm_name()}' has no "
                "chat template: use prompt_style = completion (or auto)"
            )
        yes = self._answer_tokens(p.yes_words or templates["yes"].split(","))
        no = self._answer_tokens(p.no_words or templates["no"].split(","))
        both = set(yes) & set(no)
        self._yes = [t for t in yes if t not in both]
        self._no = [t for t in no if t not in both]
        if not self._yes or not self._no:
            raise ConfigError(
                f"{where}: the yes and no answers of the prompt share their first "
                "token for this model: set yes_words and no_words"
            )
        self._prompts = PromptBuilder(
            lm, templates, chat, p.max_doc_tokens, p.label_context
        )
        self._judge = LocalJudge(
            lm, self._prompts, self._yes, self._no, p.batch_size, p.prefix_cache
        )

    def decision_config(self) -> dict:
        """The System One decision config (answer labels and chat template)
        that gives a server `model` the prompt the local engine gives it; only
        the model's tokenizer is loaded."""
        from indexer.neural.llm import load_tokenizer, on_this_machine
        from indexer.neural.models import resolve_model

        p, where = self.params, f"Project '{self.project.id}'"
        try:
            model = resolve_model(self._llm_name())  # never the hub when offline
        except DependencyError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        if not on_this_machine(model):
            raise ConfigError(
                f"{where}: decision-config needs the tokenizer of model "
                f"'{model.name}', which is neither a local directory nor a "
                "packaged model (nor a hub id in the local cache): set model to "
                "the served model's local directory (or download its hub id "
                "first) to write the decision config"
            )
        tokenizer = load_tokenizer(model)
        has_template = bool(getattr(tokenizer, "chat_template", None))
        chat = p.prompt_style == "chat" or (p.prompt_style == "auto" and has_template)
        templates = self._templates(where)
        builder = PromptBuilder(
            TokenizerOnly(tokenizer), templates, chat, p.max_doc_tokens, p.label_context
        )
        yes = (p.yes_words or templates["yes"].split(","))[0].strip()
        no = (p.no_words or templates["no"].split(","))[0].strip()
        for word in (yes, no):
            pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
            if len(pieces) != 1:
                raise ConfigError(
                    f"{where}: the answer '{word}' is {len(pieces)} tokens for model "
                    f"'{self._llm_name()}', and a decision server reads one: set "
                    "yes_words and no_words (or prompt_language) to words of one token"
                )
        return {
            "labels": {"noul": [yes, no]},
            "chat_template": builder.decision_template(),
        }

    def _templates(self, where: str) -> dict[str, str]:
        p = self.params
        language = p.prompt_language or self.project.language
        template_file = None
        if p.template_file:
            template_file = Path(p.template_file).expanduser()
            sources = self.project.projects.config.sources
            if not template_file.is_absolute() and sources:
                template_file = Path(sources[0]).parent / template_file
        return resolve_templates(
            language,
            {"prompt_template": p.prompt_template, "candidate": p.candidate_template},
            template_file,
            where,
        )

    def _answer_tokens(self, words: list[str]) -> list[int]:
        if self.params.answer_forms == "all":
            return self._lm.first_tokens(words)
        firsts = [self._lm.encode(w.strip())[:1] for w in words if w.strip()]
        return list(dict.fromkeys(ids[0] for ids in firsts if ids))

    def _server_judge(self, templates: dict[str, str], where: str) -> ServerJudge:
        """The System One server of `url`, checked with one request (with
        on_error = retrieval, a failed check is logged and suggest goes on)."""
        from indexer.neural.http import configured_server
        from indexer.neural.llm import local_tokenizer
        from indexer.neural.systemone import SystemOneClient

        p = self.params
        server = configured_server(p, where)
        if p.few_shot:
            raise ConfigError(
                f"{where}: few_shot needs engine = local (a decision server's state "
                "is the document alone)"
            )
        if "{document}" not in templates["prompt_template"]:
            raise ConfigError(f"{where}: prompt_template has no {{document}}")
        client = SystemOneClient(server, p.model, p.concurrency)
        try:
            client.check()
        except ServiceError as exc:
            if p.on_error != "retrieval":
                raise ServiceError(f"{where}: {exc.message}") from None
            log.warning("%s: %s; suggesting from retrieval alone", where, exc.message)
        return ServerJudge(
            client,
            templates,
            p.label_context,
            p.max_doc_tokens,
            local_tokenizer(p.model),
            p.concurrency,
        )

    def _setup(self, directory: Path | None) -> None:
        self._parts(directory)
        self._lm = self._judge = None
        if self.params.combine != "retrieval":
            self._load_llm()
        self._recent: OrderedDict[str, Analysis] = OrderedDict()

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        self._setup(directory)
        self._calibration = None
        if directory is not None:
            self._calibration = json.loads((directory / "calibration.json").read_text())
        if self._judge is not None:
            trained_with = (self._calibration or {}).get("llm")
            if trained_with and trained_with != self._judge.identity:
                raise NotTrainedError(
                    f"Project '{self.project.id}' was calibrated with the LLM "
                    f"'{trained_with}', but is configured with "
                    f"'{self._judge.identity}': "
                    f"retrain with `indexer train {self.project.id} CORPUS`"
                )

    # -- candidates ----------------------------------------------------------
    def _retrieve(self, texts: list[str], fallback: bool = False) -> list[dict]:
        """Per text: {"candidates": {id: {source: score}}, "neighbours": [...]};
        with `fallback`, a failing generate source's server leaves its
        candidates out."""
        out = [{"candidates": {}, "neighbours": [], "generation": None} for _ in texts]
        lexical = self._sources.get("lexical")
        if lexical is not None:
            batch = lexical.suggest_batch(texts)
            for i in range(len(texts)):
                for s in batch.row(i)[: self.params.source_candidates]:
                    out[i]["candidates"].setdefault(s.subject, {})["lexical"] = s.score
        embed = self._sources.get("embed")
        if embed is not None:
            sims, ids = embed.retrieve(texts)
            scores = embed.calibrated(sims)
            for i in range(len(texts)):
                for sim, score, cid in zip(sims[i], scores[i], ids[i], strict=True):
                    if cid >= 0:
                        entry = out[i]["candidates"].setdefault(int(cid), {})
                        entry["embed"], entry["similarity"] = float(score), float(sim)
        knn = self._sources.get("knn")
        if knn is not None:
            sims, rows = knn.neighbours(texts)
            batch = knn.vote(sims, rows)
            for i in range(len(texts)):
                out[i]["neighbours"] = [
                    (int(r), float(s))
                    for s, r in zip(sims[i], rows[i], strict=True)
                    if r >= 0
                ]
                for s in batch.row(i)[: self.params.source_candidates]:
                    out[i]["candidates"].setdefault(s.subject, {})["knn"] = s.score
        try:
            generations = self._generations(texts)
        except ServiceError as exc:
            if not fallback:
                raise
            log.warning(
                "Project '%s': %s; %d documents without generated candidates",
                self.project.id,
                exc.message,
                len(texts),
            )
            generations = None
        generate = self._sources.get("generate")
        if generations is not None:
            for i, generation in enumerate(generations):
                out[i]["generation"] = generation
                scores = generate.scores(generation)
                best = np.argsort(-scores, kind="stable")
                for j in best[: self.params.source_candidates]:
                    entry = out[i]["candidates"].setdefault(int(generation.ids[j]), {})
                    entry["generate"] = float(scores[j])
        return out

    def _generations(self, texts: list[str]) -> list[Generation] | None:
        """The generate source's analyses (None without that source); a
        source whose server failed at load is loaded first."""
        if self._waiting is not None:
            self._waiting.load_part(None)
            self._sources["generate"], self._waiting = self._waiting, None
        generate = self._sources.get("generate")
        return None if generate is None else generate.analyse(texts)

    def _union(self, found: dict[int, dict]) -> list[int]:
        """Candidates taken in turn from each source's ranking, best first."""
        rankings = [
            sorted(
                (c for c, s in found.items() if name in s),
                key=lambda c, n=name: (-found[c][n], c),
            )
            for name in SOURCES
        ]
        chosen: dict[int, None] = {}
        for rank in range(max((len(r) for r in rankings), default=0)):
            for ranking in rankings:
                if rank < len(ranking):
                    chosen.setdefault(ranking[rank])
        return list(chosen)[: self.params.candidates]

    # -- the LLM -------------------------------------------------------------
    def _concept_text(self, concept_id: int) -> ConceptText:
        vocab, lang = self.project.vocab, self.label_language
        labels = vocab.pref_labels(lang)
        if "_label_info" not in self.__dict__:
            self._label_info = (vocab.labels_in(lang), vocab.relation("broader"))
        (_, alt, note), (ptr, idx) = self._label_info
        return ConceptText(
            label=labels[concept_id],
            alt=list(alt[concept_id]),
            broader=[labels[j] for j in idx[ptr[concept_id] : ptr[concept_id + 1]]],
            note=note[concept_id] or "",
        )

    def _examples(self, neighbours: list[tuple[int, float]]) -> list[str]:
        knn = self._sources.get("knn")
        if knn is None or not self.params.few_shot:
            return []
        labels = self.project.vocab.pref_labels(self.label_language)
        out = []
        for row, _ in neighbours[: self.params.few_shot]:
            subjects = [labels[j] for j in knn._subjects[row].indices]
            out.append(
                self._prompts.example(
                    knn._documents[row]["text"], subjects, self.params.example_tokens
                )
            )
        return out

    def _judge_all(
        self, texts: list[str], found: list[dict], analyses: list[Analysis], fallback
    ) -> None:
        """The LLM's log-odds for the candidates worth asking about, all the
        documents asked together (a server gets up to `concurrency` requests
        at once); the other candidates get the answer that ranks them
        lowest. With `fallback` (on_error = retrieval), a document whose
        answer (or label bias) the server failed is left to retrieval alone."""
        started = time.perf_counter()
        asked, requests = [], []
        for text, info, analysis in zip(texts, found, analyses, strict=True):
            if not len(analysis.ids):
                continue
            judge = self._worth_judging(analysis.x)
            ids = analysis.ids[judge].tolist()
            examples = self._examples(info["neighbours"])
            asked.append((analysis, judge, ids, examples))
            requests.append((text, examples, [self._concept_text(c) for c in ids]))
        if not requests:
            return
        answers = self._judge.judge_many(requests)
        seconds = (time.perf_counter() - started) / len(requests)
        failures = []
        for (analysis, judge, ids, examples), answer in zip(
            asked, answers, strict=True
        ):
            try:
                if isinstance(answer, ServiceError):
                    raise answer
                logits = answer.log_odds
                if self.params.contextual:
                    logits = logits - self._label_bias(ids)
            except ServiceError as exc:
                if not fallback:
                    raise
                analysis.llm_failed = True
                failures.append(exc.message)
                continue
            analysis.x[:, LLM] = self._lowest_answer()
            analysis.x[judge, LLM] = np.clip(logits, -LOGIT_CLIP, LOGIT_CLIP)
            analysis.judged = len(ids)
            analysis.examples = len(examples)
            analysis.document_tokens = answer.document_tokens
            analysis.truncated = answer.truncated
            analysis.prefix_tokens = answer.prefix_tokens
            analysis.suffix_tokens = answer.suffix_tokens
            analysis.llm_seconds = seconds
        if failures:
            log.warning(
                "Project '%s': %s; %d of %d documents suggested from retrieval alone",
                self.project.id,
                failures[0],
                len(failures),
                len(requests),
            )

    def _label_bias(self, ids: list[int]) -> np.ndarray:
        """The LLM's log-odds for each concept asked about an empty document."""
        missing = [c for c in dict.fromkeys(ids) if c not in self._bias]
        if missing:
            concepts = [self._concept_text(c) for c in missing]
            logits = self._judge.judge("", [], concepts).log_odds
            self._bias.update(zip(missing, logits.tolist(), strict=True))
        return np.array([self._bias[c] for c in ids], dtype=np.float32)

    def _pruning(self) -> tuple[np.ndarray, tuple[float, float]] | None:
        """(learned weights, LLM log-odds range) when pruning applies."""
        cal = self._calibration or {}
        if not (self.params.prune and self.params.combine == "learned"):
            return None
        if not cal.get("learned") or not cal.get("llm_range"):
            return None
        weights = np.array([cal["learned"][f] for f in FEATURES])
        return weights, tuple(cal["llm_range"])

    def _worth_judging(self, x: np.ndarray) -> np.ndarray:
        """Candidates that some LLM answer within the calibration's range could
        bring into the top `prune_depth`: the others keep their rank anyway."""
        pruning, depth = self._pruning(), self.params.prune_depth
        if pruning is None or len(x) <= depth:
            return np.ones(len(x), dtype=bool)
        weights, (low, high) = pruning
        rest = x @ weights - weights[LLM] * x[:, LLM]
        worst, best = sorted((weights[LLM] * low, weights[LLM] * high))
        bar = np.sort(rest + worst)[-depth]  # the depth-th best, LLM saying no
        return rest + best >= bar

    def _lowest_answer(self) -> float:
        pruning = self._pruning()
        if pruning is None:
            return 0.0
        weights, (low, high) = pruning
        return low if weights[LLM] >= 0 else high

    def analyse(
        self, texts: list[str], progress: bool = False, fallback: bool | None = None
    ) -> list[Analysis]:
        """Candidates, their features and the LLM's judgement for each text;
        `fallback` (default: on_error = retrieval) survives a failing server."""
        from tqdm import tqdm

        if "_sources" not in self.__dict__:
            self._ensure_loaded()

        out: list[Analysis] = []
        use_llm = self.params.combine != "retrieval"
        if fallback is None:
            fallback = self.params.on_error == "retrieval"
        bar = tqdm(
            total=len(texts),
            desc="Judging candidates",
            unit=" docs",
            leave=False,
            disable=not progress or None,
        )
        for start in range(0, len(texts), 32):
            chunk = texts[start : start + 32]
            found = self._retrieve(chunk, fallback)
            analyses = [self._candidates(info) for info in found]
            if use_llm:
                self._judge_all(chunk, found, analyses, fallback)
            out += analyses
            bar.update(len(chunk))
        bar.close()
        return out

    def _candidates(self, info: dict) -> Analysis:
        """The union of the sources' candidates and their retrieval features."""
        ids = self._union(info["candidates"])
        x = np.zeros((len(ids), len(FEATURES)), dtype=np.float32)
        sources = []
        for row, cid in enumerate(ids):
            scores = info["candidates"][cid]
            x[row, 0] = 1.0
            for name in SCORES:
                x[row, FEATURES.index(name)] = scores.get(name, 0.0)
            sources.append([s for s in SOURCES if s in scores])
            x[row, FEATURES.index("sources")] = len(sources[-1]) / len(SOURCES)
        analysis = Analysis(np.asarray(ids, np.int64), x, sources, info["neighbours"])
        analysis.generation = info["generation"]
        return analysis

    # -- scores --------------------------------------------------------------
    def combine(self, x: np.ndarray, mode: str | None = None) -> np.ndarray:
        """Final scores of candidates with features `x`."""
        mode = mode or self.params.combine
        cal = self._calibration or {}
        llm = x[:, LLM]
        if mode == "learned" and cal.get("learned"):
            logit = x @ np.array([cal["learned"][f] for f in FEATURES])
        elif mode == "retrieval" and cal.get("retrieval"):
            columns = [FEATURES.index(f) for f in RETRIEVAL_FEATURES]
            weights = np.array([cal["retrieval"][f] for f in RETRIEVAL_FEATURES])
            logit = x[:, columns] @ weights
        elif mode == "retrieval":
            return x[:, [FEATURES.index(s) for s in SOURCES]].max(axis=1)
        elif mode == "llm":
            platt = cal.get("platt") or {"slope": 1.0, "intercept": 0.0}
            logit = platt["slope"] * llm + platt["intercept"]
        else:  # configured
            best = x[:, [FEATURES.index(s) for s in SOURCES]].max(axis=1)
            best = np.clip(best, 1e-4, 1 - 1e-4)
            w = self.params.llm_weight
            logit = w * llm + (1 - w) * np.log(best / (1 - best))
        return (1 / (1 + np.exp(-logit))).astype(np.float32)

    def _scores(self, analysis: Analysis) -> np.ndarray:
        return self.combine(analysis.x, "retrieval" if analysis.llm_failed else None)

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        analyses = self.analyse(texts)
        with self._lock:
            for text, analysis in zip(texts, analyses, strict=True):
                self._recent[text] = analysis
                self._recent.move_to_end(text)
            while len(self._recent) > 64:
                self._recent.popitem(last=False)
        rows = [(a.ids, self._scores(a)) for a in analyses]
        return SuggestionBatch.from_rows(rows, len(self.project.vocab))

    # -- training: sources and calibration -------------------------------------
    def _train(self, corpus, directory: Path, jobs: int) -> dict:
        docs = [d for d in corpus if d.subjects]
        if not docs:
            raise InputError(
                "No training document has a subject of vocabulary "
                f"'{self.project.vocab.vocab_id}': nothing to calibrate on"
            )
        held = min(self.params.calibration_docs, len(docs) // 2)
        chosen = set(np.linspace(0, len(docs) - 1, held).round().astype(int).tolist())
        calibration = [d for i, d in enumerate(docs) if i in chosen]
        reference = [d for i, d in enumerate(docs) if i not in chosen]
        params = self._sub_params()
        for name, cls in (("lexical", LexicalBackend), ("knn", KnnBackend)):
            if name in self.params.sources:
                (directory / name).mkdir()
                cls(self.project, params[name]).train_part(
                    reference, directory / name, jobs
                )
        self._setup(directory)
        self._calibration = None
        analyses = self.analyse(
            [d.text for d in calibration], progress=True, fallback=False
        )
        calibration_info = self._fit(calibration, analyses)
        (directory / "calibration.json").write_text(
            json.dumps(calibration_info, indent=2)
        )
        gold = sum(len(d.subjects) for d in calibration)
        found = sum(
            len(set(d.subjects) & set(a.ids.tolist()))
            for d, a in zip(calibration, analyses, strict=True)
        )
        return {
            "calibration_documents": len(calibration),
            "reference_documents": len(reference),
            "candidate_recall": found / max(gold, 1),
            "learned": calibration_info.get("learned"),
        }

    def _fit(self, docs, analyses: list[Analysis]) -> dict:
        """Logistic regressions over the held-out documents' candidates."""
        from sklearn.linear_model import LogisticRegression

        info: dict = {"llm": self._judge.identity if self._judge else None}
        rows = [a for a in analyses if len(a.ids)]
        if not rows:
            return info
        x = np.concatenate([a.x for a in rows])
        y = np.concatenate(
            [
                np.isin(a.ids, d.subjects).astype(np.int64)
                for d, a in zip(docs, analyses, strict=True)
                if len(a.ids)
            ]
        )
        info["candidates"] = int(len(y))
        info["positives"] = int(y.sum())
        if y.min() == y.max():
            return info  # one class only: keep the configured combination

        def fit(columns: list[str]) -> dict:
            index = [FEATURES.index(c) for c in columns]
            model = LogisticRegression(
                C=self.params.regularisation, fit_intercept=False, max_iter=2000
            ).fit(x[:, index], y)
            return dict(zip(columns, map(float, model.coef_[0]), strict=True))

        info["retrieval"] = fit(list(RETRIEVAL_FEATURES))
        if self._judge is not None:
            info["learned"] = fit(list(FEATURES))
            platt = fit(["llm", "bias"])
            info["platt"] = {"slope": platt["llm"], "intercept": platt["bias"]}
            info["llm_range"] = np.quantile(x[:, LLM], LLM_RANGE).tolist()
        return info

    # -- explanations --------------------------------------------------------
    def explain(self, text: str, subjects) -> dict[int, dict]:
        """Per subject: the sources that proposed it (matched labels, embedding
        similarity, similar indexed documents, the generated terms behind it)
        and the LLM's probability."""
        self._ensure_loaded()
        with self._lock:
            analysis = self._recent.get(text)
        if analysis is None:
            analysis = self.analyse([text])[0]
        position = {int(c): i for i, c in enumerate(analysis.ids)}
        scores = self._scores(analysis)
        wanted = [int(s) for s in subjects if int(s) in position]
        lexical = self._sources.get("lexical")
        matched = lexical.explain(text, wanted) if lexical is not None else {}
        out = {}
        for subject in wanted:
            row = analysis.x[position[subject]]
            entry: dict = {
                "source": "llm re-ranking",
                "score": round(float(scores[position[subject]]), 4),
                "retrieved_by": analysis.sources[position[subject]],
            }
            if analysis.llm_failed:
                entry["llm_probability"] = None
                entry["llm_unavailable"] = "the model server failed: retrieval only"
            elif self._judge is not None:
                llm = row[FEATURES.index("llm")]
                entry["llm_probability"] = round(float(1 / (1 + np.exp(-llm))), 4)
                if (self._calibration or {}).get("platt"):
                    entry["llm_calibrated"] = round(
                        float(self.combine(row[None, :], "llm")[0]), 4
                    )
            if subject in matched:
                entry["label_match"] = {
                    **matched[subject],
                    "labels": self._matched_labels(text, subject),
                    "score": round(float(row[FEATURES.index("lexical")]), 4),
                }
            if "embed" in entry["retrieved_by"]:
                entry["embedding"] = {
                    "similarity": round(float(row[FEATURES.index("similarity")]), 3),
                    "score": round(float(row[FEATURES.index("embed")]), 4),
                }
            if "generate" in entry["retrieved_by"]:
                entry["generated_terms"] = {
                    "terms": [
                        described_term(m) for m in analysis.generation.matches[subject]
                    ],
                    "score": round(float(row[FEATURES.index("generate")]), 4),
                    "generated": analysis.generation.terms,
                }
            documents = self._documents_with(subject, analysis.neighbours)
            if documents:
                entry["similar_documents"] = documents
                entry["knn_score"] = round(float(row[FEATURES.index("knn")]), 4)
            out[subject] = entry
        return out

    def _documents_with(self, subject: int, neighbours) -> list[dict]:
        knn = self._sources.get("knn")
        if knn is None:
            return []
        return [
            {**knn._documents[r], "similarity": round(s, 3)}
            for r, s in neighbours
            if subject in knn._subjects[r].indices
        ]

    def _matched_labels(self, text: str, concept_id: int) -> list[str]:
        """The concept's labels whose (stemmed) words occur in the text."""
        vocab, lang = self.project.vocab, self.project.language
        analyzer = get_analyzer(lang)
        tokens = analyzer.tokens(text)
        joined, present = f" {' '.join(tokens)} ", set(tokens)
        languages = [lang] if vocab.has_language(lang) else vocab.languages
        found = []
        for label_lang in languages:
            pref, alt, _ = vocab.labels_in(label_lang)
            for label in ([pref[concept_id]] if pref[concept_id] else []) + list(
                alt[concept_id]
            ):
                for form in dict.fromkeys((label, QUALIFIER.sub("", label))):
                    words = analyzer.tokens(form)
                    if not words:
                        continue
                    if f" {' '.join(words)} " in joined:
                        found.append(label)
                    elif all(
                        w in present or any(t.endswith(w) for t in present)
                        for w in words
                    ):
                        found.append(f"{label} (words apart or in compounds)")
                    else:
                        continue
                    break
        return list(dict.fromkeys(found))
