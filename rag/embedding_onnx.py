"""ONNX Runtime embedding backend: the only module that talks to onnxruntime.

A sentence-transformers model folder (the bundled all-MiniLM-L6-v2 or any
local one made of Transformer → Pooling → optional Normalize) is exported to
ONNX once, on this machine, from its own weights (``torch.onnx.export``, no
download), optionally quantised to int8 (dynamic quantisation of the weights),
and cached under the data directory. Later starts load the cached file with
ONNX Runtime and the model's ``tokenizer.json`` with ``tokenizers``: no torch
import, no sentence-transformers.

Pooling and normalisation are done here in numpy exactly as sentence-transformers
does them (mean over the attention mask, CLS, or max), so vectors match the
PyTorch backend's to float rounding (fp32) and answer-recall stays the same;
docs/benchmarks.md has the measurement.

How a call is run, for CPU seconds (measured on squad-dev's 960 chunks, 2-core
VM, docs/benchmarks.md, session 6): texts are tokenised once, sorted by token
count and cut into batches of at most ``batch_size`` texts and
``_TOKENS_PER_BATCH`` padded tokens (padding was 18% of the tokens run with
length-by-characters batches of 32, 2% now); each batch runs single-threaded
(``intra_op_num_threads=1``, no spin-waiting), and the batches of one call run
on ``threads`` threads at once. ONNX Runtime's own intra-op pool of two threads
cost about 10% more CPU for the same work (its threads synchronise per operator
and spin while they wait), and spun against the parse processes beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from rag.errors import ConfigurationError

__all__ = ["OnnxBackend", "export_onnx", "plan_batches"]

Precision = Literal["fp32", "int8"]

_OPSET = 17
# Padded tokens of one batch: 8 chunks of the bundled model's 256. Smaller
# batches of similar lengths run fewer padding tokens; below this, the matrix
# products (rows = batch x tokens) would get too thin to run at full speed.
_TOKENS_PER_BATCH = 2048


def plan_batches(lengths: Sequence[int], batch_size: int, tokens_per_batch: int = _TOKENS_PER_BATCH) -> list[list[int]]:
    """Indexes of texts grouped into batches, longest texts first: each batch
    holds at most ``batch_size`` texts and, padded to its longest, at most
    ``tokens_per_batch`` tokens (a text longer than that goes alone). Texts of
    similar lengths share a batch, so little padding is computed."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for index in order:
        if batches:
            batch = batches[-1]
            longest = lengths[batch[0]]  # sorted: the first is the longest
            if len(batch) < batch_size and longest * (len(batch) + 1) <= tokens_per_batch:
                batch.append(index)
                continue
        batches.append([index])
    return batches


def _model_config(path: Path) -> tuple[str, int]:
    """(pooling mode, max_seq_length) of a sentence-transformers folder; refuses
    module stacks this backend does not reproduce (Dense layers and the like)."""
    modules_file = path / "modules.json"
    pooling = "mean"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        unsupported = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
        if unsupported:
            raise ConfigurationError(
                f"the onnx embedding backend supports Transformer, Pooling and Normalize modules; "
                f"{path} also has {', '.join(unsupported)}: use RAG_EMBEDDING_BACKEND=torch"
            )
        for module in modules:
            if module["type"].endswith("Pooling"):
                config = json.loads((path / module["path"] / "config.json").read_text())
                if config.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif config.get("pooling_mode_max_tokens"):
                    pooling = "max"
                elif config.get("pooling_mode_mean_sqrt_len_tokens"):
                    pooling = "mean_sqrt_len"
    max_len = 512
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        max_len = int(json.loads(st_config.read_text()).get("max_seq_length") or max_len)
    return pooling, max_len


# Part of every cached export's name: bumped when the export itself changes, so
# that files exported before are not loaded (2: weights stored as fp16 are
# exported as fp32; before, they made a graph ONNX Runtime refuses).
_EXPORT_VERSION = 2


def _fingerprint(path: Path) -> str:
    """Changes when the model's weights or config change (size + mtime of each
    file), or the export does (``_EXPORT_VERSION``)."""
    digest = hashlib.sha256(f"export-{_EXPORT_VERSION}".encode())
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".json")):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def export_onnx(model_path: Path, cache_dir: Path, precision: Precision = "fp32") -> Path:
    """The ONNX file of ``model_path`` (exported and cached on first use)."""
    target_dir = cache_dir / f"{model_path.name}-{_fingerprint(model_path)}"
    fp32 = target_dir / "model.onnx"
    target = fp32 if precision == "fp32" else target_dir / "model.int8.onnx"
    if target.is_file():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    if not fp32.is_file():
        _export_fp32(model_path, fp32)
    if precision == "int8":
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic
        except ImportError as exc:
            raise ConfigurationError("int8 quantisation needs the onnx package (pip install onnx)") from exc
        partial = _partial(target)
        # Per-channel scales: per-tensor int8 weights moved MiniLM's vectors to
        # cosine 0.90-0.97 of the fp32 ones; per channel, 0.99 and above.
        quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8, per_channel=True)
        partial.replace(target)
    return target


def _partial(target: Path) -> Path:
    """Where ``target`` is written before its rename: one name per process and
    thread, since processes that start at once on one data directory (``rag api``
    beside ``rag worker``) each export, and must not write into one file."""
    return target.with_name(f"{target.name}.{os.getpid()}-{threading.get_ident()}.partial")


def _export_fp32(model_path: Path, target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise ConfigurationError(
            f"exporting {model_path} to ONNX needs torch and transformers once; install them, "
            "or copy an exported model.onnx into the cache"
        ) from exc
    model = AutoModel.from_pretrained(str(model_path), local_files_only=True)
    # In fp32 whatever the stored dtype: weights stored as fp16 load as fp16
    # (transformers 5), and their graph mixed fp16 weights with fp32 layer norms.
    model.float().eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    takes_types = "token_type_ids" in model.forward.__code__.co_varnames
    names = names if takes_types else names[:2]
    sample = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: Any) -> Any:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    partial = _partial(target)
    with torch.no_grad():
        torch.onnx.export(
            Wrapped(),
            sample,
            str(partial),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=_OPSET,
            dynamo=False,
        )
    partial.replace(target)


class OnnxBackend:
    """Tokenise with ``tokenizers``, run the exported model with ONNX Runtime,
    pool and normalise in numpy. Thread-safe for ``embed`` (ONNX Runtime
    sessions are, and run calls at once); the tokenizer is guarded like the
    PyTorch backend's. ``threads``: batches run at once (default: one per core)."""

    def __init__(
        self,
        model_path: Path,
        *,
        cache_dir: Path,
        precision: Precision = "fp32",
        threads: int | None = None,
        device: str | None = None,
    ) -> None:
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigurationError(
                "RAG_EMBEDDING_BACKEND=onnx needs onnxruntime and tokenizers (pip install onnxruntime)"
            ) from exc
        self.pooling, self.max_seq_length = _model_config(model_path)
        onnx_file = export_onnx(model_path, cache_dir, precision)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One thread per run, without spin-waiting; a call's batches run in
        # parallel instead (module docstring).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.threads = threads or _cores()
        providers = ["CPUExecutionProvider"]
        if device and device.startswith("cuda"):
            providers.insert(0, "CUDAExecutionProvider")
        available = set(onnxruntime.get_available_providers())
        self._session = onnxruntime.InferenceSession(
            str(onnx_file), options, providers=[p for p in providers if p in available]
        )
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.device = self._session.get_providers()[0].removesuffix("ExecutionProvider").lower()
        tokenizer_file = model_path / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ConfigurationError(f"{model_path} has no tokenizer.json, which the onnx backend needs")
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(self.max_seq_length)
        self._tokenizer.no_padding()
        self._counter = Tokenizer.from_file(str(tokenizer_file))  # untruncated, for counting
        self._counter.no_truncation()
        self._counter.no_padding()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.dimension = len(self.embed(["dimension probe"], 1)[0])
        self.file = onnx_file

    def embed(self, texts: Sequence[str], batch_size: int) -> list[list[float]]:
        with self._lock:
            encodings = self._tokenizer.encode_batch(list(texts))
        # Each run has one thread: a few texts (a burst of questions) go in
        # smaller batches, one for each thread, not one batch on one core (15
        # questions in one run took most of a 16-stream /ask burst's 75 ms of
        # embedding on the H100's host, session 15).
        batch_size = max(1, min(batch_size, -(-len(texts) // self.threads)))
        batches = plan_batches([len(e.ids) for e in encodings], batch_size)
        out: list[Any] = [None] * len(texts)

        def run(batch: list[int]) -> None:
            vectors = self._run([encodings[i] for i in batch])
            for i, vector in zip(batch, vectors, strict=True):
                out[i] = vector

        if len(batches) == 1 or self.threads == 1:
            for batch in batches:
                run(batch)
        else:
            list(self._executor().map(run, batches))  # re-raises a batch's error
        return [list(map(float, v)) for v in out]

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rag-onnx")
            return self._pool

    def _run(self, encodings: list[Any]) -> Any:
        """Pooled, L2-normalised vectors of one batch of tokenised texts."""
        import numpy as np

        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = encoding.attention_mask
            types[row, :n] = encoding.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        hidden = self._session.run(None, {name: feeds[name] for name in self._inputs})[0]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            weights = mask[..., None].astype(hidden.dtype)
            pooled = np.where(weights > 0, hidden, -1e9).max(axis=1)
        else:
            weights = mask[..., None].astype(hidden.dtype)
            summed = (hidden * weights).sum(axis=1)
            counts = np.maximum(weights.sum(axis=1), 1e-9)
            pooled = summed / (np.sqrt(counts) if self.pooling == "mean_sqrt_len" else counts)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._counter.encode(text, add_special_tokens=False).ids)


def _cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
