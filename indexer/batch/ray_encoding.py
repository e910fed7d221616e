"""`indexer train --engine ray`: the encoding passes that dominate training
(document embeddings for knn, the frozen decoder's pooled states for llm_head,
the concept index of embed and llm_rank) as Ray Data `map_batches` through an
actor pool; each actor builds the encoder once. Everything else of the training
runs here, so the model that comes out is the one a local run produces.
"""

from __future__ import annotations

import numpy as np

from indexer.batch.ray_engine import ray_error_reason, start_ray
from indexer.batch.records import RayOptions
from indexer.batch.work import ProjectRef
from indexer.errors import IndexerError


class RayEncoder:
    """A Ray actor holding one encoder."""

    def __init__(self, ref: ProjectRef, recipe: tuple, role: str):
        from indexer.neural.encoder import build_encoder

        project = ref.load() if recipe[0] == "project" else None
        self.encoder = build_encoder(recipe, project)
        self.role = role

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["text"]]
        return {"i": batch["i"], "vector": self.encoder.encode(texts, self.role, False)}


class RayEncoding:
    """Encodes texts on a Ray cluster (a context manager: joins or starts it)."""

    def __init__(self, ref: ProjectRef, settings: RayOptions, block_size: int = 256):
        self.ref = ref
        self.settings = settings
        self.block_size = block_size
        self.encoded = 0  # texts encoded on the cluster
        self._started_here = False

    def __enter__(self) -> RayEncoding:
        self._started_here = start_ray(self.settings.address)
        return self

    def __exit__(self, *exc) -> None:
        if self._started_here:
            import ray

            ray.shutdown()

    def encode(self, recipe: tuple, texts: list[str], role: str) -> np.ndarray:
        """The vectors of `texts`, in order."""
        import pyarrow as pa
        import ray
        from ray.data import ActorPoolStrategy

        table = pa.table({"i": np.arange(len(texts)), "text": texts})
        blocks = [
            table.slice(start, self.block_size)
            for start in range(0, len(texts), self.block_size)
        ]
        out: np.ndarray | None = None
        try:
            dataset = ray.data.from_arrow(blocks).map_batches(
                RayEncoder,
                fn_constructor_kwargs={"ref": self.ref, "recipe": recipe, "role": role},
                batch_size=self.block_size,
                batch_format="numpy",
                compute=ActorPoolStrategy(size=self.settings.workers),
                num_cpus=1,
                num_gpus=self.settings.gpus_per_worker or None,
            )
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                vectors = np.asarray(batch["vector"], dtype=np.float32)
                if out is None:
                    out = np.zeros((len(texts), vectors.shape[1]), np.float32)
                out[batch["i"]] = vectors
        except ray.exceptions.RayError as exc:
            raise IndexerError(
                f"Encoding on the Ray cluster failed: {ray_error_reason(exc)}"
            ) from None
        if out is None:
            raise IndexerError("Encoding on the Ray cluster returned no vectors")
        self.encoded += len(texts)
        return out
