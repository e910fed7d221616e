"""llm_head LoRA training under a real torchrun: 2 CPU processes, gloo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer.project import Projects

from ..conftest import DATA

ROOT = Path(__file__).resolve().parents[2]
PROJECT = """
[{id}]
language = en
vocab = tiny
backend = llm_head
model = {model}
mode = lora
max_length = 32
epochs = 2
batch_size = {batch}
lora_r = 4
lora_targets = q_proj, v_proj
dropout = 0
lora_dropout = 0
"""


def weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    tensors = {
        f"head.{k}": v for k, v in load_file(model_dir / "head.safetensors").items()
    }
    adapter = load_file(model_dir / "adapter" / "adapter_model.safetensors")
    return {**tensors, **{f"lora.{k}": v for k, v in adapter.items()}}


def torchrun(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         "--nproc-per-node", "2", "-m", "indexer", "--projects", str(cfg), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_two_ranks_train_like_one_process_with_the_same_global_batch(
    workspace, tiny_llm
):
    cfg = workspace / "projects.cfg"
    cfg.write_text(
        cfg.read_text()
        + PROJECT.format(id="ddp", model=tiny_llm, batch=2)
        + PROJECT.format(id="single", model=tiny_llm, batch=4)
    )
    projects = Projects.from_path(cfg)
    projects.get("single").train([DATA / "tiny.tsv"])
    result = torchrun(cfg, "train", "ddp", str(DATA / "tiny.tsv"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Trained 'ddp'") == 1  # rank 0 reports, alone
    assert "on 2 processes" in result.stdout
    ddp = projects.get("ddp")
    info = ddp.backend.manifest["info"]
    assert info["distributed"] == {
        "world_size": 2,
        "largest_weight_difference_between_ranks": 0.0,
    }
    single = projects.get("single")
    assert info["history"] == pytest.approx(
        single.backend.manifest["info"]["history"], abs=1e-4
    )
    ours, theirs = weights(ddp.model_dir), weights(single.model_dir)
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], atol=2e-5, err_msg=name)
    # the LoRA weights moved: equality is not that of two untrained adapters
    assert max(np.abs(v).max() for k, v in ours.items() if "lora_B" in k) > 1e-4
    assert not ddp.backend.checkpoint_dir.exists()


def test_a_backend_without_distributed_training_is_refused(workspace, tiny_llm):
    result = torchrun(workspace / "projects.cfg", "train", "tfidf-en",
                      str(DATA / "tiny.tsv"))  # fmt: skip
    assert result.returncode != 0  # torchrun's own code for a failed rank
    assert "Error: Backend 'tfidf' trains in one process" in result.stderr
    assert "exitcode  : 2" in result.stderr  # each rank's, from torchrun's report
