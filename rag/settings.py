"""One settings object for the whole service.

Built once at start-up (``create_app``, the worker, the CLI) from the environment
(prefix ``RAG_``) or an ``.env`` file, then passed down. Nothing reads the
environment at import time. Tests build their own ``Settings(...)``.

Why one module of about 450 lines: it is the one ``Settings`` class (every
field with its description, which the docs and ``--help`` show) and the
validators that refuse unworkable combinations, which read several fields at
once; splitting the fields would split the validators from what they check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.errors import ConfigurationError

__all__ = ["PromptStyle", "SearchMode", "Settings"]

PromptStyle = Literal["auto", "gemma-chat", "completion"]
SearchMode = Literal["hybrid", "dense", "lexical"]

BUNDLED_EMBEDDING_MODEL = "bundled:all-MiniLM-L6-v2"
BUNDLED_LLM = "bundled:gemma-3-270m-q4_k_m"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- where things live -------------------------------------------------
    data_dir: Path = Field(
        default=Path("data"),
        description="Holds the registry DB, stored originals, the embedded vector "
        "store (Qdrant Edge, in store/), the embedded queue and the assembled model.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the registry. Default: SQLite in data_dir.",
    )
    qdrant_url: str | None = Field(
        default=None,
        description="URL of a Qdrant server. Default: Qdrant Edge (in this process) under data_dir/store.",
    )
    qdrant_api_key: str | None = Field(default=None, description="API key of the Qdrant server, if it needs one.")
    # How a Qdrant server lays out each new collection version (scale-out).
    qdrant_shard_number: int = Field(
        default=1, ge=1, description="Qdrant server: shards per collection (spread over the cluster's nodes)."
    )
    qdrant_replication_factor: int = Field(
        default=1, ge=1, description="Qdrant server: copies of each shard (2+ survives a node loss)."
    )
    qdrant_write_consistency_factor: int = Field(
        default=1, ge=1, description="Qdrant server: replicas that must confirm a write."
    )
    qdrant_on_disk_vectors: bool = Field(
        default=False, description="Qdrant server: keep original vectors on disk (memory-mapped), not in RAM."
    )
    qdrant_quantization: Literal["none", "int8"] = Field(
        default="none",
        description="Qdrant server: int8 scalar quantisation of dense vectors (kept in RAM, 4x smaller; "
        "originals rescore).",
    )
    store_index_after: int = Field(
        default=20_000,
        ge=1,
        description="Embedded store: points written to a collection since its last index build that "
        "start a new HNSW build (in a child process); below it, new points are searched exactly.",
    )
    store_hnsw_ef: int = Field(
        default=128, ge=1, description="HNSW candidates per dense query (both engines); higher = better recall."
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker, e.g. redis://host:6379/0. Default: an embedded "
        "SQLite queue in data_dir with the worker inside the API process.",
    )

    # --- HTTP -----------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address `rag serve` / `rag api` listen on.")
    port: int = Field(default=8000, description="Port `rag serve` / `rag api` listen on.")
    http_keep_alive_s: int = Field(
        default=75,
        ge=1,
        description="How long an idle keep-alive connection stays open. Longer than clients' and proxies' own idle "
        "timeouts (aiohttp's 15 s, load balancers' 60 s), so that none sends a request on a connection the service "
        "is closing at that moment (a reset; uvicorn's own default is 5 s).",
    )
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, gt=0, description="Largest file accepted (413 above).")
    max_request_bytes: int = Field(
        default=200 * 1024 * 1024,
        gt=0,
        description="Largest request body, all files of an upload together (413 as soon as the body "
        "passes it, whether Content-Length declares it or a chunked body streams it).",
    )
    max_json_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description="Largest request body that is not a file upload (multipart/form-data): JSON requests, "
        "golden questions (413 as RAG_MAX_REQUEST_BYTES); a 100 MB chat message took 300 MB of the API "
        "process's memory at its peak.",
    )
    max_files_per_request: int = Field(default=100, gt=0, description="Most files in one upload (413 above).")

    worker_concurrency: int = Field(
        default=3,
        ge=1,
        le=64,
        description="Tasks one worker runs at once (documents, re-index runs); `rag serve`'s "
        "embedded worker and `rag worker` alike. Documents in flight share embedding batches, "
        "and one is parsed while another's chunks are embedded.",
    )

    # --- access -----------------------------------------------------------------
    auth_enabled: bool = Field(
        default=True,
        description="API keys (Authorization: Bearer <key>) on every route but /healthz, /readyz and the "
        "web page's static files. Off only by this setting; the service then listens on 127.0.0.1 "
        "unless RAG_AUTH_OFF_ALLOW_REMOTE is set, and warns at start.",
    )
    auth_off_allow_remote: bool = Field(
        default=False,
        description="With authentication off, listen on RAG_HOST even when it is not a loopback address.",
    )
    bootstrap_admin_key: str | None = Field(
        default=None,
        description="On the first start (no bootstrap key recorded yet), this becomes an admin:* key. "
        "Unset: one is generated and printed once in the log.",
    )
    auth_secret: str | None = Field(
        default=None,
        description="Secret of the keys' HMAC (at least 32 characters). Default: generated once into "
        "data_dir/auth_secret; set it when API processes on several hosts share one registry.",
    )
    auth_cache_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="Seconds an API process trusts a key it found valid without asking the registry again "
        "(the check then costs no database round trip). A key revoked through this process stops at once; "
        "through another process or `rag keys revoke`, within this time. 0: ask on every request.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins (https://host:port) allowed to call the API from a browser on another "
        "origin. Empty: none; cross-site form posts are refused either way.",
    )
    docs: Literal["key", "open", "off"] = Field(
        default="key",
        description="/docs, /redoc and /openapi.json: key = any valid API key; open = anyone; off = not served.",
    )
    embedded_worker: bool = Field(
        default=True,
        description="In embedded mode, run the Celery worker and scheduler in the "
        "API process. Off only to hold queued work (maintenance).",
    )

    # --- embeddings -----------------------------------------------------------
    embedding_model: str = Field(
        default=BUNDLED_EMBEDDING_MODEL,
        description="Path of a local sentence-transformers model, or the bundled "
        "all-MiniLM-L6-v2.",
    )
    embedding_device: str | None = Field(
        default=None, description="cpu, cuda, mps… Default: chosen automatically."
    )
    embedding_query_device: str = Field(
        default="auto",
        description="Device questions (searches, /ask) are embedded on, by a second copy of "
        "the embedding model when it differs from the embedder's (the backend as "
        "RAG_EMBEDDING_BACKEND resolves it there: ONNX Runtime on the CPU). auto: the CPU "
        "where the embedder runs on CUDA (questions then do not queue behind a GPU that "
        "generation keeps busy; see docs/benchmarks.md), else the embedder's device.",
    )
    embedding_batch_size: int = Field(default=32, gt=0, description="Texts embedded in one batch.")
    embedding_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        default="auto",
        description="torch: sentence-transformers on PyTorch. onnx: the same model exported "
        "to ONNX on this machine (once, cached under data_dir/models/onnx) and run by ONNX "
        "Runtime, same vectors, faster on CPUs. onnx-int8: that export with int8 weights "
        "(about 3x faster chunk embedding on a CPU with VNNI, slightly different vectors). "
        "auto: onnx when the embedder runs on the CPU, torch on a GPU (RAG_EMBEDDING_DEVICE, "
        "else an NVIDIA driver or Apple silicon). See docs/benchmarks.md.",
    )
    embedding_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads the embedder (torch or ONNX Runtime) and re-ranker use. Default: "
        "the library's choice (one per core). On a small, busy host 1 is often faster "
        "for single queries; see docs/benchmarks.md.",
    )

    # --- parsing limits (ingest/sandbox.py; docs/reliability.md) -------------
    parse_isolation: Literal["process", "inline"] = Field(
        default="process",
        description="process: each document is parsed in a child process of its own, forked "
        "from a warm parse server, and killed at the time or memory limit or when its "
        "document is deleted; documents parse in parallel. inline: in the indexing "
        "process, one at a time, with no time or memory bound (benchmarks, debugging).",
    )
    parse_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Wall-clock limit of one parse; past it the parse is killed and the "
        "document fails naming the limit.",
    )
    parse_memory_mb: int = Field(
        default=2048,
        ge=64,
        description="Memory one parse may allocate beyond the parser's own libraries "
        "(address space of the child process, and its resident size).",
    )
    parse_max_decompressed_mb: int = Field(
        default=256,
        gt=0,
        description="Most bytes a document may inflate to: the members of a docx/xlsx/pptx "
        "(checked before parsing) or the decoded streams of a PDF (checked while decoding).",
    )
    parse_max_compression_ratio: float = Field(
        default=200.0,
        gt=1,
        description="Largest uncompressed/compressed ratio of a docx/xlsx/pptx member over 1 MiB.",
    )
    parse_max_elements: int = Field(
        default=100_000, gt=0, description="Most text elements (paragraphs, rows…) one document may have."
    )
    parse_max_text_chars: int = Field(
        default=20_000_000, gt=0, description="Most characters of text one document may have."
    )

    # --- chunking -------------------------------------------------------------
    chunk_max_tokens: int = Field(
        default=256,
        gt=16,
        description="Upper bound of a chunk, in the embedder's tokens; also capped "
        "by the embedder's own sequence limit (254 for all-MiniLM-L6-v2). 256 "
        "retrieved best of 128/200/256 on squad-dev; see docs/benchmarks.md.",
    )
    chunk_overlap_tokens: int = Field(
        default=40, ge=0, description="Tokens a chunk repeats from the end of the one before."
    )
    embed_section_titles: bool = Field(
        default=True,
        description="Embed (and index lexically) each chunk with its section title in "
        "front, so a chunk deep in a section still matches questions about its subject.",
    )

    # --- retrieval ------------------------------------------------------------
    top_k: int = Field(default=5, gt=0, le=100, description="Passages retrieved per question by default.")
    search_mode: SearchMode = Field(
        default="hybrid",
        description="Default retrieval: dense and lexical fused by reciprocal rank "
        "(hybrid), or either alone. Requests may choose their own.",
    )
    hybrid_candidates: int = Field(
        default=40,
        gt=0,
        le=1000,
        description="Chunks each side (dense, lexical) hands to the fusion; at least top_k.",
    )
    lexical_k1: float = Field(default=1.2, ge=0, description="BM25 term-frequency saturation.")
    lexical_b: float = Field(default=0.75, ge=0, le=1, description="BM25 length normalisation.")
    lexical_avg_length: float | None = Field(
        default=None,
        gt=0,
        description="Average chunk length in index terms for BM25's length "
        "normalisation. Default: derived from chunk_max_tokens.",
    )
    rerank_model: str | None = Field(
        default=None,
        description="Path of a local sentence-transformers cross-encoder; when set, "
        "the best rerank_candidates chunks are re-scored by it. Off by default.",
    )
    rerank_candidates: int = Field(
        default=20, gt=0, le=200, description="Best chunks re-scored by the cross-encoder."
    )
    score_threshold: float = Field(
        default=0.2,
        description="Below this best cosine score the answer says the documents "
        "don't contain it, and no generation runs.",
    )
    abstain_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="After generation, the answer is withheld (grounded false, with a "
        "reason) when its estimated probability of being unanswerable from the passages "
        "is at least this. Lower abstains more often, also on answerable questions; 1 "
        "only on a refusal. Default: the abstention model's (1.0). Its operating point on "
        "squad-dev is 0.67: abstention 0.23 on unanswerable questions, 0.11 false abstention "
        "(docs/benchmarks.md, issue 14).",
    )

    # --- generation -----------------------------------------------------------
    llm_model: str = Field(
        default=BUNDLED_LLM,
        description="Path of a GGUF file, or the bundled Gemma 3 270M Q4_K_M.",
    )
    llm_prompt_style: PromptStyle = Field(
        default="auto",
        description="gemma-chat: Gemma's chat template (instruction-tuned models). "
        "completion: a plain completion prompt (base models). auto: completion for "
        "the bundled base model, gemma-chat otherwise.",
    )
    llm_n_ctx: int = Field(default=4096, ge=512, description="Context window of each sequence, in tokens.")
    llm_threads: int | None = Field(
        default=None, ge=1, description="CPU threads of llama.cpp. Default: all cores."
    )
    llm_n_gpu_layers: int | None = Field(
        default=None,
        description="Layers offloaded to the GPU. Default: all when llama.cpp was "
        "built with a GPU backend, else 0.",
    )
    llm_flash_attn: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Flash attention: auto lets llama.cpp decide (on where the backend supports it).",
    )
    llm_kv_cache_type: Literal["f16", "q8_0", "q4_0"] = Field(
        default="f16",
        description="Type of the K and V cache; quantised V needs flash attention.",
    )
    llm_lora_path: str | None = Field(
        default=None, description="A GGUF LoRA adapter applied to every model instance."
    )
    llm_lora_scale: float = Field(default=1.0, description="Scale of the LoRA adapter.")
    llm_pool_size: int = Field(
        default=1, ge=1, le=64, description="Model instances (each with its own weights and context)."
    )
    llm_parallel: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Sequences one model instance decodes together in one batch; "
        "each has llm_n_ctx tokens of KV cache.",
    )
    llm_n_batch: int | None = Field(
        default=None,
        ge=32,
        description="Tokens evaluated in one llama.cpp call (prompt chunks; the GPU runs them 512 at a time). "
        "Default: 2048 with a GPU, 512 on a CPU, where a longer step would stall the other streams.",
    )
    llm_prompt_steps: int | None = Field(
        default=None,
        ge=0,
        le=1024,
        description="Waiting prompts go first, in steps of whole llama.cpp micro-batches, at most this many "
        "steps in a row while running streams wait for their next token; 0 packs prompts into what the "
        "running streams leave of each step, as they arrive. Default: 8 with a GPU, 0 on a CPU.",
    )
    llm_step_trace: Path | None = Field(
        default=None,
        description="Diagnostics: append one JSON line per scheduler step to this file (when it began, when "
        "llama_decode returned and its tokens were read, on the machine's monotonic clock; its tokens, prompt "
        "tokens and outputs), written whenever the scheduler falls idle. Off by default.",
    )
    llm_prompt_cache: bool = Field(
        default=True,
        description="Reuse the KV cache of a prompt prefix seen before (the fixed "
        "instructions, earlier chat turns) instead of evaluating it again.",
    )
    llm_prompt_cache_min_tokens: int | None = Field(
        default=None,
        ge=0,
        description="The shortest cached prefix reused; a shorter one is evaluated again. Default: 32 with a GPU "
        "(chat bursts reusing only the 14 tokens of turn markup ran slower there than whole prompts), "
        "0 on a CPU.",
    )
    llm_swa_full: bool | None = Field(
        default=None,
        description="Sliding-window layers (Gemma 3's) keep every position of a slot, not only their window "
        "plus one micro-batch. Default: with the prompt cache (a cached prompt can then be cut back anywhere), "
        "and wherever it costs no memory (slots of at most window + n_ubatch cells).",
    )
    llm_gpu_argmax: Literal["auto", "kernel", "graph"] = Field(
        default="auto",
        description="How greedy sampling on a GPU takes the argmax of a batch's logits inside the decode graph: "
        "kernel, one ggml_argmax (fast where the CUDA kernel splits each row across thread blocks, as the "
        "llama.cpp patch that scripts/install applies to a CUDA build does); graph, two stages of stock ggml "
        "ops (each chunk's argmax, then the best chunk), fast with stock llama.cpp too. Default: kernel where "
        "the loaded llama.cpp has that patch, else graph.",
    )
    llm_chain_steps: bool = Field(
        default=True,
        description="On a GPU, a step of the same streams' next tokens goes to llama.cpp before the last "
        "step's tokens are known (llama_decode_chained, a llama.cpp patch that scripts/install applies to a "
        "CUDA build; without it, or with false, the next step is queued once they are read): llama.cpp's "
        "work on the host for a step then runs while the GPU computes the one before.",
    )
    llm_queue_size: int = Field(
        default=8, ge=0, description="Requests that may wait for a free sequence slot; more get 429."
    )
    max_tokens: int = Field(default=256, gt=0, description="Longest answer, in tokens, unless a request asks for less.")
    answer_extractive: bool = Field(
        default=True,
        description="Answers from passages with a completion prompt (the bundled base model) "
        "are copied from the passages token by token (extractive decoding): SQuAD-style span "
        "answers instead of paraphrase (docs/benchmarks.md, issue 14). Applied where the "
        "logits are read on the CPU (greedy; not with sampling in a GPU's decode graph).",
    )
    answer_end_bias: float = Field(
        default=0.0,
        ge=0,
        description="Extractive decoding: added to the logit of the end of the answer (a newline) "
        "after its first token; higher gives shorter spans.",
    )
    answer_copy_sentences: int = Field(
        default=1,
        ge=0,
        description="Extractive decoding copies from the N sentences of the passages that share "
        "the most words with the question; 0: from the whole passages (docs/benchmarks.md, issue 14).",
    )
    answer_best_last: bool = Field(
        default=True,
        description="Completion prompts list the passages from the last to the best (each still "
        "numbered by its rank), so that the best stands next to the question.",
    )
    llm_isolation: Literal["process", "inline"] = Field(
        default="process",
        description="process: each model instance runs in a child process of its own, which "
        "never imports torch (a CUDA llama.cpp and torch's CUDA libraries could not share a "
        "process), and a crashed model is restarted without taking the service down. "
        "inline: in the service's process (benchmarks, debugging).",
    )
    llm_load: bool = Field(
        default=True, description="Load the model at start-up (off for index-only nodes)."
    )

    # --- re-indexing, folder sync, schedules --------------------------------
    sync_roots: list[Path] = Field(
        default_factory=list,
        description="Server-side folders (and everything below them) that a collection "
        "may be bound to for sync runs; JSON list in the environment. Empty: no "
        "folder may be bound.",
    )
    reindex_keep_previous_s: float = Field(
        default=86400.0,
        ge=0,
        description="How long the version replaced by a full re-index is kept for "
        "POST .../rollback before it is dropped.",
    )
    quality_gate_margin: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="A new version is promoted only if its answer-recall@5 on the "
        "collection's golden questions is at most this much below the current one's.",
    )
    scheduler_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="How often the beat checks the stored cron schedules for due slots.",
    )
    schedule_misfire_grace_s: float = Field(
        default=300.0,
        gt=0,
        description="A slot found due later than this after its time (beat was down) is skipped.",
    )
    reindex_lock_stale_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="A re-index lock older than this is taken over (its worker died).",
    )

    # --- logs and metrics ------------------------------------------------------
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: one readable line per event; json: one JSON object per line "
        "(time, level, logger, message, request_id, extras) for log collectors.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Root log level.")
    worker_metrics_port: int = Field(
        default=9101,
        ge=0,
        le=65535,
        description="Split mode: port on which each `rag worker` serves its own Prometheus "
        "metrics (ingestion stages, documents, re-index runs) at /metrics; 0: off. The API "
        "serves its own at /metrics of its HTTP port.",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.is_split_mode and not self.qdrant_url:
            raise ConfigurationError(
                "RAG_BROKER_URL is set, so the API, worker and beat run as separate "
                "processes; the embedded store can be opened by one process only, "
                "so set RAG_QDRANT_URL to a Qdrant server as well."
            )
        if self.chunk_overlap_tokens >= self.chunk_max_tokens:
            raise ConfigurationError("chunk_overlap_tokens must be below chunk_max_tokens")
        if self.max_tokens >= self.llm_n_ctx:
            raise ConfigurationError("max_tokens must be below llm_n_ctx")
        if self.max_request_bytes < self.max_upload_bytes:
            raise ConfigurationError("max_request_bytes must be at least max_upload_bytes")
        if self.llm_kv_cache_type != "f16" and self.llm_flash_attn == "off":
            raise ConfigurationError("a quantised KV cache (llm_kv_cache_type) needs flash attention")
        return self

    # --- derived values ------------------------------------------------------
    @property
    def bind_host(self) -> str:
        """Where the HTTP server listens: RAG_HOST, except that with authentication
        off it stays on loopback unless RAG_AUTH_OFF_ALLOW_REMOTE says otherwise."""
        if not self.auth_enabled and not self.auth_off_allow_remote and not _is_loopback(self.host):
            return "127.0.0.1"
        return self.host

    @property
    def blocking_threads(self) -> int:
        """Threads for the blocking calls of requests (a search, fitting a
        prompt in the model process): one for every request the model pools
        admit at once, running or queued, besides Python's default of cores +
        4. With the default alone (20 on 16 cores) a 16-stream /ask burst's
        searches waited for threads that its prompts held, each waiting on
        the model process."""
        return self.llm_pool_size * self.llm_parallel + self.llm_queue_size + (os.cpu_count() or 1) + 4

    @property
    def is_split_mode(self) -> bool:
        return self.broker_url is not None and not self.broker_url.startswith("sqla+")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'registry.db'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir.resolve() / 'queue.db'}"

    @property
    def resolved_lexical_avg_length(self) -> float:
        # Index terms (stop words dropped) per chunk of chunk_max_tokens embedder
        # tokens: about half, measured on the squad-dev documents.
        return self.lexical_avg_length or max(8.0, self.chunk_max_tokens * 0.5)

    @property
    def store_path(self) -> Path:
        """The embedded store (Qdrant Edge)."""
        return self.data_dir / "store"

    @property
    def qdrant_path(self) -> Path:
        """Where releases before Qdrant Edge kept qdrant-client's local-mode store
        (migrated into ``store_path`` at start-up)."""
        return self.data_dir / "qdrant"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "originals"

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
