"""Text from an OpenAI-compatible chat-completions server (`POST
/v1/chat/completions`: `transformers serve`, vLLM, Ollama, sglang): one
conversation per request, answered greedily (temperature 0), and the
conversations of one batch go out concurrently.

    client = ChatClient(ModelServer(url), model="my-model", concurrency=4)
    client.check()                                   # at load: names the URL
    texts = client.complete([messages, ...], max_tokens=128)  # one str each
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from indexer.errors import ServiceError
from indexer.neural.http import ModelServer

PATH = "/v1/chat/completions"


class ChatClient:
    """Asks a chat-completions server; a batch's requests go out concurrently,
    at most `concurrency` at once together with every other client of the same
    server (see `indexer.neural.http`, which also bounds each request's time
    and answer, and fails at once while the server's circuit breaker is open)."""

    def __init__(self, server: ModelServer, model: str, concurrency: int = 4):
        self.server = server
        self.model = model
        self._pool = ThreadPoolExecutor(max(1, concurrency), "chat")

    @property
    def identity(self) -> str:
        return f"chat model {self.model}"  # the host may move

    def check(self) -> None:
        """One small request, so that a wrong URL, model or key shows at load."""
        try:
            self._ask([{"role": "user", "content": "Say OK."}], max_tokens=1)
        except ServiceError as exc:
            raise ServiceError(
                f"Cannot use the chat server for model '{self.model}': {exc.message}"
            ) from None

    def complete(self, conversations: list[list[dict]], max_tokens: int) -> list[str]:
        """The assistant's answer to each conversation ({role, content} messages)."""
        return list(
            self._pool.map(
                lambda messages: self._ask(messages, max_tokens), conversations
            )
        )

    def _ask(self, messages: list[dict], max_tokens: int) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stream": False,
        }
        return self.server.post(PATH, body, answer_text)


def answer_text(answer: dict) -> str:
    """The text of the first choice of a chat completion; ValueError otherwise."""
    choices = answer["choices"]
    if not isinstance(choices, list) or not choices:
        raise ValueError("the answer has no choices")
    content = choices[0]["message"]["content"]
    if content is None:
        return ""  # a model may answer with nothing (or only a tool call)
    if not isinstance(content, str):
        raise ValueError(f"the answer's content is not text: {content!r}")
    return content
