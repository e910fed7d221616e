"""Yes/no decisions from a System One server (`POST /v1/systemone`: served by
`transformers serve`, Ollama, decisio, TypeSafe's Jev): a `state` and up to
64 typed questions per request, each `noul` question answered with the
probability of "true", read from the next-token scores without generating.

    client = SystemOneClient(ModelServer(url), model="my-model", concurrency=4)
    client.check()                                 # at load: names the URL
    p_yes = client.noul(document, ["Is ...?", ...])  # one float per question
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from indexer.errors import ServiceError
from indexer.neural.http import ModelServer

MAX_QUESTIONS = 64  # per request, as the API allows
PATH = "/v1/systemone"


class SystemOneClient:
    """Asks a System One server; requests of one document go out concurrently,
    at most `concurrency` at once together with every other client of the same
    server (see `indexer.neural.http`, which also bounds each request's time
    and answer, and fails at once while the server's circuit breaker is open)."""

    def __init__(self, server: ModelServer, model: str, concurrency: int = 4):
        self.server = server
        self.model = model
        self._pool = ThreadPoolExecutor(max(1, concurrency), "systemone")

    @property
    def identity(self) -> str:
        return f"systemone model {self.model}"  # the host may move

    def check(self) -> None:
        """One small request, so that a wrong URL, model or key shows at load."""
        try:
            self.noul("A test.", ["Is this a test?"])
        except ServiceError as exc:
            raise ServiceError(
                f"Cannot use the System One server for model '{self.model}': "
                f"{exc.message}"
            ) from None

    def noul(self, state: str, questions: list[str]) -> np.ndarray:
        """P(true) of each yes/no question about `state`."""
        if not questions:
            return np.zeros(0, dtype=np.float64)
        batches = [
            questions[i : i + MAX_QUESTIONS]
            for i in range(0, len(questions), MAX_QUESTIONS)
        ]
        answers = self._pool.map(lambda batch: self._ask(state, batch), batches)
        return np.array([p for batch in answers for p in batch], dtype=np.float64)

    def _ask(self, state: str, questions: list[str]) -> list[float]:
        names = [f"q{i}" for i in range(len(questions))]
        body = {
            "model": self.model,
            "state": state,
            "questions": {
                name: {"type": "noul", "instructions": text}
                for name, text in zip(names, questions, strict=True)
            },
        }
        return self.server.post(
            PATH, body, lambda answer: _probabilities(answer, names)
        )


def _probabilities(answer: dict, names: list[str]) -> list[float]:
    """The `noul` probability of each named question; ValueError otherwise."""
    answers = answer["answers"]
    out = []
    for name in names:
        p = answers[name]["noul"]
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ValueError(f"answer '{name}' is not a probability: {p!r}")
        out.append(float(p))
    return out


def log_odds(p: np.ndarray, clip: float = 1e-7) -> np.ndarray:
    """log P / (1 - P), finite: probabilities are kept within `clip` of 0 and 1."""
    p = np.clip(np.asarray(p, dtype=np.float64), clip, 1 - clip)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)
