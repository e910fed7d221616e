"""llm_head LoRA training under a real torchrun: 2 CPU processes, gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def torchrun_command(cfg: Path, *args: str) -> dict:
    return {
        "args": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc-per-node", "2", "-m", "indexer", "--projects", str(cfg),
                 *args],
        "env": {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        "text": True,
    }  # fmt: skip


def torchrun(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        **torchrun_command(cfg, *args), capture_output=True, timeout=600
    )


def kill_with_descendants(pid: int) -> None:
    """SIGKILL torchrun and its ranks (they run in sessions of their own)."""
    import psutil

    root = psutil.Process(pid)
    family = [root, *root.children(recursive=True)]
    for process in family:
        process.kill()
    psutil.wait_procs(family, timeout=30)


def with_projects(workspace: Path, text: str) -> Path:
    cfg = workspace / "projects.cfg"
    cfg.write_text(cfg.read_text() + text)
    return cfg


def test_two_ranks_train_like_one_process_with_the_same_global_batch(
    workspace, tiny_llm
):
    cfg = with_projects(
        workspace,
        PROJECT.format(id="ddp", model=tiny_llm, batch=2)
        + PROJECT.format(id="single", model=tiny_llm, batch=4),
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

    def curve(history):  # what was learnt, not how long it took
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    ddp_curve = curve(info["history"])
    single_curve = curve(single.backend.manifest["info"]["history"])
    assert [row.keys() for row in ddp_curve] == [row.keys() for row in single_curve]
    for ddp_row, single_row in zip(ddp_curve, single_curve, strict=True):
        assert ddp_row == pytest.approx(single_row, abs=1e-4)
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


def test_a_killed_distributed_training_resumes_from_its_last_epoch(workspace, tiny_llm):
    longer = "epochs = 5\npatience = 0"
    cfg = with_projects(
        workspace,
        PROJECT.format(id="ddp", model=tiny_llm, batch=2).replace("epochs = 2", longer)
        + PROJECT.format(id="single", model=tiny_llm, batch=4).replace(
            "epochs = 2", longer
        ),
    )
    projects = Projects.from_path(cfg)
    projects.get("single").train([DATA / "tiny.tsv"])
    ddp = projects.get("ddp")
    state = ddp.backend.checkpoint_dir / "state.json"
    process = subprocess.Popen(
        **torchrun_command(cfg, "train", "ddp", str(DATA / "tiny.tsv")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epoch"] >= 2:
            break
        time.sleep(0.01)
    kill_with_descendants(process.pid)
    process.wait()
    done = json.loads(state.read_text())["epoch"]
    assert 2 <= done < 5 and not ddp.is_trained
    result = torchrun(cfg, "train", "ddp", str(DATA / "tiny.tsv"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming after epoch {done}" in result.stderr
    info = ddp.backend.manifest["info"]
    assert info["resumed_after_epoch"] == done and info["epochs_run"] == 5
    ours, theirs = weights(ddp.model_dir), weights(projects.get("single").model_dir)
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], atol=2e-5, err_msg=name)
