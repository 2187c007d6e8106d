"""Text generation with llama.cpp.

=================  ==============================================================
module             holds
=================  ==============================================================
``types``          ``Generation``, ``GenerationHandle``, ``TextModel`` (protocols)
                   and ``GenerationParams`` (what one request asks for)
``pool``           ``load_models(settings)`` and ``ModelPool``: in-process or child
``llama``          ``LlamaModel``: loading a model and its context, text, requests
``scheduler``      the thread that batches every running request of a context
``slots``          ``Slot``: a sequence's KV cache and sampler; ``place``: prompt reuse
``job``            ``GenerationJob``: one request inside the scheduler
``extractive``     ``CopyConstraint``: answers copied from the passages, token by token
``handle``         ``FutureHandle``: future, token times and cancel of every job kind
``batch``          ``Batch``: a ``llama_batch`` over NumPy arrays
``sampler``        ``BatchGreedy``: greedy sampling of the whole batch in the graph
``stops``          ``StopMatcher``: stop strings in streamed text
``stream``         ``TextStream``: text from the model's thread to an asyncio task
``process``        ``ModelProcess``: the model in a child process (parent side)
``child``          ``python -m rag.generation.child``: the child process
``bundled``        ``resolve_model_path``: the bundled GGUF, assembled once
``native``         llama-cpp-python, loaded on first use
=================  ==============================================================

Nothing here imports llama.cpp or NumPy at import time: the model process
loads llama.cpp's libraries before anything else.
"""

from rag.generation.bundled import resolve_model_path
from rag.generation.pool import ModelPool, load_models
from rag.generation.types import (
    CopySource,
    FlashAttention,
    Generation,
    GenerationHandle,
    GenerationParams,
    KvCacheType,
    PromptTooLong,
    Sampling,
    TextModel,
)

__all__ = [
    "CopySource",
    "FlashAttention",
    "Generation",
    "GenerationHandle",
    "GenerationParams",
    "KvCacheType",
    "ModelPool",
    "PromptTooLong",
    "Sampling",
    "TextModel",
    "load_models",
    "resolve_model_path",
]
