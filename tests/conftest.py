"""Shared fixtures: a workspace with the tiny vocabulary and one project per backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SHARED = Path(os.environ.get("INDEXER_DATASETS", SHARED))

PROJECTS_CFG = """
[vocab:tiny]
source = {data}/tiny.ttl

[dummy-en]
language = en
vocab = tiny
backend = dummy
uri = http://example.org/t/physics

[tfidf-en]
language = en
vocab = tiny
backend = tfidf
ngram = 1

[lexical-en]
language = en
vocab = tiny
backend = lexical

[ensemble-en]
language = en
vocab = tiny
backend = ensemble
sources = tfidf-en:2, lexical-en:1

[xmc-en]
language = en
vocab = tiny
backend = xmc

[calibrated-en]
language = en
vocab = tiny
backend = calibrated
sources = tfidf-en, xmc-en, lexical-en
"""


def shared_dataset(name: str) -> Path:
    """Path of a real dataset, skipping the test when it is not available."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"dataset {name} not available in {SHARED}")
    return path


@pytest.fixture(autouse=True)
def model_servers_never_failed():
    """Every test starts with model servers that never failed: this process
    keeps a breaker and a gate per server URL, and a test's server may get
    the port of an earlier test's failed one."""
    from indexer.neural.http import forget_model_servers

    forget_model_servers()
    yield
    forget_model_servers()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A directory with projects.cfg (tiny vocabulary) and an empty data dir."""
    (tmp_path / "projects.cfg").write_text(PROJECTS_CFG.format(data=DATA))
    return tmp_path


@pytest.fixture
def projects(workspace: Path):
    from indexer.project import Projects

    return Projects.from_path(workspace / "projects.cfg")


@pytest.fixture
def run_cli(workspace: Path):
    """Invoke the CLI against the workspace; returns click's Result."""
    from indexer.cli import cli

    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None):
        return runner.invoke(
            cli, ["--projects", str(workspace / "projects.cfg"), *args], input=input
        )

    return run


@pytest.fixture
def tiny_corpus() -> Path:
    return DATA / "tiny.tsv"


WORDS = [
    "the",
    "a",
    "of",
    "and",
    "in",
    "to",
    "for",
    "on",
    "with",
    "stars",
    "star",
    "telescope",
    "telescopes",
    "galaxies",
    "galaxy",
    "astronomy",
    "physics",
    "particles",
    "quantum",
    "motion",
    "cells",
    "genes",
    "gene",
    "biology",
    "evolution",
    "history",
    "roman",
    "empire",
    "medieval",
    "towns",
    "music",
    "orchestras",
    "symphonies",
    "classical",
    "solar",
    "panels",
    "energy",
    "photovoltaics",
    "rooftop",
    "homes",
    "semiconductors",
    "proteins",
    "living",
    "science",
    "life",
    "natural",
    "world",
    "study",
    "past",
    "musical",
    "arts",
    "power",
    "stargazing",
    "physical",
    "sciences",
    "systematic",
]


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT, word-level vocabulary (no download)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS))]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(
        vocab_file=str(path / "vocab.txt"), do_lower_case=True
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llm(
    path: Path, seed: int = 0, chat_template: bool = False, initializer_range=0.02
) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64) whose word-level
    tokenizer knows the test texts, the English llm_rank prompt and yes/no,
    saved as a transformers directory (no download). A wider
    `initializer_range` makes yes/no answers differ between candidates."""
    import re

    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from backends.llm_rank.prompts import TEMPLATES

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
    text = " ".join(
        [
            *WORDS,
            *TEMPLATES["en"].values(),
            'this text means one word user assistant " : , .',
        ]
    )
    words = sorted(set(re.findall(r"\w+|[^\w\s]", text.lower())) - set(specials))
    words = [*specials, *words]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, "<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    tok.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=initializer_range,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory) -> Path:
    """A tiny random decoder LLM (Llama architecture) for llm_head."""
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_chat_llm(tmp_path_factory) -> Path:
    """A tiny random Llama with a chat template, for llm_rank."""
    path = tmp_path_factory.mktemp("tiny-chat-llama")
    return build_tiny_llm(path, chat_template=True, initializer_range=0.2)


@pytest.fixture
def dense_workspace(
    workspace: Path, tiny_encoder: Path, tiny_llm: Path, tiny_chat_llm: Path
) -> Path:
    """The workspace plus knn, embed and LLM projects on the tiny models."""
    cfg = workspace / "projects.cfg"
    cfg.write_text(
        cfg.read_text()
        + f"""
[knn-en]
language = en
vocab = tiny
backend = knn
model = {tiny_encoder}
k = 5

[embed-en]
language = en
vocab = tiny
backend = embed
model = {tiny_encoder}

[llm_head-en]
language = en
vocab = tiny
backend = llm_head
model = {tiny_llm}
max_length = 48
epochs = 3

[llm_rank-en]
language = en
vocab = tiny
backend = llm_rank
model = {tiny_chat_llm}
embed_model = {tiny_encoder}
calibration_docs = 5
dtype = float32

; random weights write random words: the contract checks the plumbing, so
; the answer is kept to one short term (12 tokens) that maps by embedding
; to every concept of the tiny vocabulary (8 of them)
[llm_generate-en]
language = en
vocab = tiny
backend = llm_generate
model = {tiny_chat_llm}
embed_model = {tiny_encoder}
dtype = float32
max_new_tokens = 12
map_candidates = 8
calibration_docs = 10
"""
    )
    return workspace
