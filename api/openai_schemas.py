"""Request and response bodies of the OpenAI-compatible endpoints (``/v1/models``,
``/v1/chat/completions``, ``/v1/embeddings``), shaped as the OpenAI API
documents them. Unknown request fields are ignored, as OpenAI clients send
many; the sources of a grounded answer travel in the extension field
``sources`` of the response and of the last stream chunk."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import EvidencePublic, SourcePublic

__all__ = [
    "ChatChoice",
    "ChatCompletion",
    "ChatCompletionRequest",
    "ChatMessage",
    "EmbeddingItem",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "ModelCard",
    "ModelList",
    "OpenAIUsage",
]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ContentPart(_Lenient):
    type: str
    text: str | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(_Lenient):
    model: str = Field(min_length=1, examples=["rag/handbook"])
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    # Greedy when temperature is absent or 0; otherwise top-k 40, top-p, temperature.
    temperature: float | None = Field(default=None, ge=0, le=5)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, lt=2**32 - 1)
    ignore_eos: bool = Field(default=False, description="Generate max_tokens tokens (as llama-server's; benchmarks).")
    n: int = Field(default=1, ge=1, le=1)


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: OpenAIUsage
    sources: list[SourcePublic] | None = None  # extension: what a grounded answer rests on
    timings: dict[str, float] | None = None  # extension
    # extension, rag/<collection> models only: GroundingPublic's fields
    grounded: bool | None = None
    reason: str | None = None
    supported: bool | None = None
    evidence: list[EvidencePublic] | None = None
    unanswerable_probability: float | None = None
    draft: str | None = None
    prompt_style: str | None = None  # also for the base model


class EmbeddingsRequest(_Lenient):
    input: str | list[str] = Field(description="Text or texts; token arrays are not supported.")
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: dict[str, int]


def chunk(
    *, id: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a stream."""
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    body.update(extra)
    return body
