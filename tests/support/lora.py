"""Builds GGUF LoRA adapters for a GGUF model, for tests: no adapter can be
downloaded here, so tests make their own with llama.cpp's ``gguf`` package,
in the layout llama.cpp's convert_lora_to_gguf.py writes (general.type
"adapter", adapter.type "lora", adapter.lora.alpha; for each adapted weight
``<name>.lora_a`` of shape [rank, n_in] and ``<name>.lora_b`` of [n_out, rank])."""

from __future__ import annotations

from pathlib import Path


def write_lora(
    base: Path,
    out: Path,
    *,
    rank: int = 4,
    targets: tuple[str, ...] = ("attn_q.weight", "attn_output.weight"),
    std: float = 0.0,
    seed: int = 0,
) -> Path:
    """An adapter for every tensor of ``base`` whose name ends in one of
    ``targets``. ``std`` 0 gives B = 0, an adapter that changes nothing;
    otherwise A and B are random with that spread."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(base)
    field = reader.fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode()
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(out, arch)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    count = 0
    for tensor in reader.tensors:
        if not tensor.name.endswith(targets):
            continue
        n_in, n_out = int(tensor.shape[0]), int(tensor.shape[1])  # GGUF order: ne[0] is the input side
        a = rng.normal(0.0, 1.0, (rank, n_in)).astype(np.float32)
        b = rng.normal(0.0, std, (n_out, rank)).astype(np.float32) if std else np.zeros((n_out, rank), np.float32)
        writer.add_tensor(f"{tensor.name}.lora_a", a)
        writer.add_tensor(f"{tensor.name}.lora_b", b)
        count += 1
    if not count:
        raise ValueError(f"no tensor of {base} ends in {targets}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
