"""The training loop of llm_head: epochs over cached states (frozen) or through
the decoder with LoRA adapters, validation after every epoch, early stopping,
and checkpoints that let an interrupted training resume."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from backends.llm_head.head import load_tensors, multilabel_loss, save_tensors, scores
from indexer import distributed
from indexer.errors import ConfigError

MONITOR = "ndcg@10"
# numbering of head-probe epochs (their seeds and bars), apart from real ones
PROBE_EPOCHS = 10_000


class Trainer:
    """The epoch loop: training, validation, early stopping, checkpoints.

    Under torchrun every rank trains on its share of each global batch (its
    shard), DistributedDataParallel averages the gradients, and only rank 0
    validates and checkpoints; it tells the others the outcome of each epoch.
    """

    def __init__(self, backend, head, x, targets, train_rows, val_rows, texts):
        import torch

        self.backend, self.p = backend, backend.params
        self.device = backend.device
        self.head = head.to(self.device)
        self.x = torch.from_numpy(x)
        self.targets, self.texts = targets, texts
        self.train_rows, self.val_rows = train_rows, val_rows
        self.adapter = None
        self.label_ids = np.zeros(0, np.int64)
        self.subjects: list[list[int]] = []
        self.fingerprint = ""
        groups = [{"params": list(head.parameters()), "lr": self.p.learning_rate}]
        if self.p.mode != "frozen":
            self._attach_adapter()
            lora = [q for q in self.adapter.parameters() if q.requires_grad]
            groups.append({"params": lora, "lr": self.p.lora_learning_rate})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=self.p.weight_decay)
        self.base_rates = [group["lr"] for group in groups]
        self.probing = False
        self.lengths = np.asarray([len(t) for t in texts])
        self.world = distributed.current_world()
        self.head_step = distributed.wrap_for_training(self.head, self.world)
        self.adapter_step = (
            None
            if self.adapter is None
            else distributed.wrap_for_training(self.adapter, self.world)
        )

    def _attach_adapter(self) -> None:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        _, self.tokenizer, decoder, _ = self.backend._decoder(trainable=True)
        if self.p.mode == "qlora":
            decoder = prepare_model_for_kbit_training(decoder)
        config = LoraConfig(
            r=self.p.lora_r,
            lora_alpha=self.p.lora_alpha,
            lora_dropout=self.p.lora_dropout,
            target_modules=list(self.p.lora_targets),
            bias="none",
        )
        try:
            self.adapter = get_peft_model(decoder, config)
        except ValueError as exc:
            raise ConfigError(
                f"{self.backend._where()}: lora_targets = "
                f"{','.join(self.p.lora_targets)} do not fit this model: "
                f"{str(exc).splitlines()[0]}"
            ) from None

    # -- state -------------------------------------------------------------
    def _trainable(self) -> dict:
        state = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        if self.adapter is not None:
            from peft import get_peft_model_state_dict

            lora = get_peft_model_state_dict(self.adapter)
            state.update({f"lora.{k}": v for k, v in lora.items()})
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    def _restore(self, state: dict) -> None:
        head = {k[5:]: v for k, v in state.items() if k.startswith("head.")}
        self.head.load_state_dict(head)
        if self.adapter is not None:
            from peft import set_peft_model_state_dict

            lora = {k[5:]: v for k, v in state.items() if k.startswith("lora.")}
            set_peft_model_state_dict(self.adapter, lora)

    def _save_checkpoint(self, state: dict, best: dict | None) -> None:
        """The last completed epoch (with optimiser state) and, when it changed,
        the best one. state.json, replaced last, names the files of its epoch, so
        a kill at any moment leaves a consistent checkpoint."""
        import torch

        if not self.world.is_main:
            return
        directory = self.backend.checkpoint_dir
        directory.mkdir(parents=True, exist_ok=True)
        optim = self.optimizer.state_dict()
        tensors = dict(self._trainable())
        for index, values in optim["state"].items():
            for name, value in values.items():
                if not isinstance(value, torch.Tensor):
                    value = torch.tensor(value)
                tensors[f"optim.{index}.{name}"] = value
        batches = state.get("partial", {}).get("batches")
        part = f"-batch-{batches}" if batches else ""
        state["last_file"] = f"epoch-{state['epoch']}{part}.safetensors"
        save_tensors(directory / state["last_file"], tensors)
        if best is not None:
            state["best_file"] = f"best-{state['epoch']}.safetensors"
            save_tensors(directory / state["best_file"], best)
        groups = [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
            for g in optim["param_groups"]
        ]
        tmp = directory / "state.json.tmp"
        tmp.write_text(json.dumps({**state, "param_groups": groups}))
        os.replace(tmp, directory / "state.json")
        for old in directory.glob("*.safetensors"):
            if old.name not in (state["last_file"], state.get("best_file")):
                old.unlink()

    def _resume(self) -> dict | None:
        directory = self.backend.checkpoint_dir
        try:
            state = json.loads((directory / "state.json").read_text())
        except (OSError, ValueError):
            return None
        if state.get("fingerprint") != self.fingerprint:
            print(
                "Ignoring the checkpoint of a training with other settings or data",
                file=sys.stderr,
            )
            return None
        try:
            tensors = load_tensors(directory / state["last_file"])
            best = load_tensors(directory / state["best_file"])
        except (OSError, KeyError) as exc:
            print(f"Ignoring an incomplete checkpoint ({exc})", file=sys.stderr)
            return None
        self._restore(tensors)
        optim: dict = {"state": {}, "param_groups": state.pop("param_groups")}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                optim["state"].setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict(optim)
        state["best_state"] = best
        print(
            f"Resuming after epoch {state['epoch']} from {directory}", file=sys.stderr
        )
        return state

    # -- the loop ------------------------------------------------------------
    def run(self) -> dict:
        p = self.p
        state = self._resume() or {
            "fingerprint": self.fingerprint,
            "epoch": 0,
            "history": [],
            "best": None,
            "best_epoch": 0,
            "stale": 0,
        }
        resumed = state["epoch"]
        started = time.perf_counter()
        if self.adapter is not None and p.probe_epochs and "probe" not in state:
            state["probe"] = self._probe()  # kept in checkpoints: probed once
            state["best"] = state["probe"].get(MONITOR)  # LoRA epochs must beat it
        best_state = state.pop("best_state", None) or self._trainable()
        for epoch in range(state["epoch"] + 1, p.epochs + 1):
            if p.patience and state["stale"] >= p.patience:
                break
            epoch_started = time.perf_counter()
            partial = state.pop("partial", None) or {"batches": 0, "loss_sum": 0.0}
            try:
                loss = self._epoch(epoch, partial)
            except KeyboardInterrupt:
                self._save_partial(state, best_state, epoch, partial)
                raise
            metrics = distributed.broadcast(
                self._validate() if self.world.is_main else None, self.world
            )
            seconds = time.perf_counter() - epoch_started
            improved = self._record(state, epoch, loss, metrics, seconds)
            if improved:
                best_state = self._trainable()
            self._save_checkpoint(state, best_state if improved else None)
            distributed.barrier(self.world)
            self.backend._epoch_done(epoch)
        self._restore(best_state)
        return {
            **self._distributed_info(),
            "epochs_run": state["epoch"],
            "best_epoch": state["best_epoch"],
            "history": state["history"],
            "resumed_after_epoch": resumed,
            **({"probe": state["probe"]} if "probe" in state else {}),
            "train_seconds": round(time.perf_counter() - started, 1),
        }

    def _probe(self) -> dict:
        """Linear probing before fine-tuning (LP-FT, Kumar et al. 2022): the
        head first learns on the frozen states, so the adapters start from a
        head that already ranks, not from a random one."""
        from tqdm import tqdm

        adapter, self.adapter = self.adapter, None  # head-only epochs on self.x
        self.probing = True  # at the head's constant rate
        try:
            for probe in range(1, self.p.probe_epochs + 1):
                fresh = {"batches": 0, "loss_sum": 0.0}
                loss = self._epoch(PROBE_EPOCHS + probe, fresh)
            metrics = distributed.broadcast(
                self._validate() if self.world.is_main else None, self.world
            )
        finally:
            self.adapter, self.probing = adapter, False
        if self.world.is_main:
            tqdm.write(
                f"head probe, {self.p.probe_epochs} epochs: loss {loss:.4f}"
                + "".join(f"  {k} {v:.4f}" for k, v in metrics.items()),
                file=sys.stderr,
            )
        return {"epochs": self.p.probe_epochs, "loss": round(loss, 5), **metrics}

    def _distributed_info(self) -> dict:
        if not self.world.active:
            return {}
        difference = distributed.largest_difference_from_main(
            self._trainable(), self.world
        )
        return {
            "distributed": {
                "world_size": self.world.size,
                "largest_weight_difference_between_ranks": difference,
            }
        }

    def _record(self, state: dict, epoch: int, loss: float, metrics: dict, seconds):
        """Add the epoch to the history and say whether it is the best so far."""
        from tqdm import tqdm

        score = metrics.get(MONITOR)
        improved = score is None or state["best"] is None or score > state["best"]
        if improved:
            state["best"], state["best_epoch"], state["stale"] = score, epoch, 0
        else:
            state["stale"] += 1
        row = {"epoch": epoch, "loss": round(loss, 5), **metrics}
        state["history"].append({**row, "seconds": round(seconds, 1)})
        state["epoch"] = epoch
        if self.world.is_main:
            tqdm.write(
                f"epoch {epoch}/{self.p.epochs}: loss {loss:.4f}"
                + "".join(f"  {k} {v:.4f}" for k, v in metrics.items())
                + f"  ({seconds:.0f} s)"
                + ("  (best)" if improved and metrics else ""),
                file=sys.stderr,
            )
        return improved

    def _epoch(self, epoch: int, partial: dict) -> float:
        """One pass; `partial` counts the batches done (and their loss) so far,
        so that an epoch interrupted by Ctrl-C resumes where it stopped."""
        import torch
        from tqdm import tqdm

        p = self.p
        batches = self._batches(epoch)
        accumulate = 1 if self.adapter is None else p.gradient_accumulation
        steps_per_epoch = -(-len(batches) // accumulate)
        self.head.train()
        if self.adapter is not None:
            self.adapter.train()
        self.optimizer.zero_grad()
        done = partial["batches"]
        documents = int(sum(len(b) for b in batches))
        bar = tqdm(
            total=documents,
            initial=int(sum(len(b) for b in batches[:done])),
            desc=f"epoch {epoch}",
            unit=" docs",
            leave=False,
            disable=None if self.world.is_main else True,
        )
        pending = 0.0  # loss of the batches since the last optimiser step
        for step in range(done + 1, len(batches) + 1):
            global_rows = batches[step - 1]
            torch.manual_seed(p.seed + epoch * 1_000_003 + step)  # resumable dropout
            rows, weight = self._share(global_rows)
            with self.backend._out_of_memory_guard():
                loss = self._loss(rows)
                (loss * weight / accumulate).backward()
            pending += float(loss.detach()) * len(rows) * bool(weight)
            bar.update(len(global_rows))
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
            if step % accumulate == 0 or step == len(batches):
                done_steps = (epoch - 1) * steps_per_epoch + -(-step // accumulate)
                self._set_rates(done_steps - 1, p.epochs * steps_per_epoch)
                self.optimizer.step()
                self.optimizer.zero_grad()
                partial["batches"] = step
                partial["loss_sum"] += pending
                pending = 0.0
        bar.close()
        total = distributed.sum_over_ranks(partial["loss_sum"], self.world)
        return total / max(documents, 1)

    def _batches(self, epoch: int) -> list[np.ndarray]:
        """The epoch's global batches: shuffled; through the decoder, grouped by
        length (sorted within windows of 32 batches, then the batches shuffled),
        so that a batch pads little."""
        p = self.p
        rng = np.random.default_rng(p.seed + epoch)
        order = self.train_rows[rng.permutation(len(self.train_rows))]
        size = p.head_batch_size if self.adapter is None else p.batch_size
        # a global batch of `size` documents per rank; each rank takes its share
        step_size = size * self.world.size
        if self.adapter is None:
            return [order[i : i + step_size] for i in range(0, len(order), step_size)]
        batches = []
        window = 32 * step_size
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += np.array_split(chunk, range(step_size, len(chunk), step_size))
        return [batches[i] for i in rng.permutation(len(batches))]

    def _set_rates(self, step: int, total_steps: int) -> None:
        """Linear warm-up, then cosine decay to zero over the planned steps
        (`schedule = cosine`, the default for LoRA); constant otherwise."""
        import math

        p = self.p
        schedule = p.schedule
        if schedule == "auto" or self.probing:
            schedule = "constant" if self.adapter is None else "cosine"
        factor = 1.0
        if schedule == "cosine":
            warmup = max(1, round(p.warmup * total_steps))
            if step < warmup:
                factor = (step + 1) / warmup
            else:
                progress = (step - warmup) / max(1, total_steps - warmup)
                factor = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        groups = self.optimizer.param_groups
        for group, rate in zip(groups, self.base_rates, strict=True):
            group["lr"] = rate * factor

    def _save_partial(self, state: dict, best_state: dict, epoch: int, partial: dict):
        """On Ctrl-C inside an epoch through the decoder: keep the batches done."""
        if self.adapter is None or not partial["batches"] or not self.world.is_main:
            return
        saved = {**state, "partial": partial}
        self._save_checkpoint(saved, None if "best_file" in state else best_state)
        print(
            f"\nInterrupted in epoch {epoch} after {partial['batches']} batches; "
            f"saved in {self.backend.checkpoint_dir}: the same command resumes",
            file=sys.stderr,
        )

    def _share(self, global_rows: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's rows of a global batch and the weight of their mean loss.

        Weighted so that the gradient averaged over the ranks is the gradient of
        the mean over the whole global batch, as in one process; a rank left
        without rows runs one row at weight 0, since every rank must step."""
        if not self.world.active:
            return global_rows, 1.0
        rows = np.array_split(global_rows, self.world.size)[self.world.rank]
        if not len(rows):
            return global_rows[:1], 0.0
        return rows, len(rows) * self.world.size / len(global_rows)

    def _loss(self, rows: np.ndarray):
        pooled = self._pooled(rows, self.adapter_step)
        logits = self.head_step(pooled)
        y = self._dense_targets(rows).to(logits.device)
        return multilabel_loss(logits, y, self.p.loss, self.p.label_smoothing)

    def _pooled(self, rows: np.ndarray, adapter=None):
        if self.adapter is None:
            return self.x[rows].to(self.device)
        return self.backend._pooled(
            adapter or self.adapter, self.tokenizer, [self.texts[i] for i in rows]
        )

    def _dense_targets(self, rows: np.ndarray):
        import torch

        block = self.targets[rows]
        y = torch.zeros(block.shape, dtype=torch.float32)
        doc = np.repeat(np.arange(len(rows)), np.diff(block.indptr))
        y[torch.from_numpy(doc), torch.from_numpy(block.indices.astype(np.int64))] = 1
        return y

    def _validate(self) -> dict:
        import torch

        from indexer.eval import Evaluator

        if not len(self.val_rows):
            return {}
        backend = self.backend
        self.head.eval()
        if self.adapter is not None:
            self.adapter.eval()
        evaluator = Evaluator(len(backend.project.vocab), limit=5)
        size = self.p.batch_size if self.adapter else 256
        with torch.inference_mode():
            for start in range(0, len(self.val_rows), size):
                rows = self.val_rows[start : start + size]
                with backend._out_of_memory_guard():
                    probs = scores(self.head, self._pooled(rows), self.device)
                gold = [self.subjects[r] for r in rows]
                evaluator.add(gold, backend._batch(probs, self.label_ids))
        results = evaluator.results()
        return {k: round(results[k], 4) for k in ("f1@5", MONITOR)}
