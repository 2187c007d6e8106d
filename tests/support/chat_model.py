"""A copy of a GGUF model with a chat template added to its metadata, for the
tests of instruction-tuned prompt handling: nothing can be downloaded here, so
the bundled Gemma 3 270M (a base model) gets Gemma's own chat template.

GGUF layout: header (magic, version, tensor count, metadata count), metadata
entries, tensor infos (offsets relative to the data section), padding to
``general.alignment``, the data. The new entry goes at the end of the
metadata; the data is copied unchanged after fresh padding."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

from rag.gguf_info import _skip, _u32, _u64

__all__ = ["GEMMA_CHAT_TEMPLATE", "with_chat_template"]

# Gemma's chat template as Google's tokenizer_config.json carries it (abridged: no system-role branch).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def with_chat_template(source: Path, target: Path, template: str = GEMMA_CHAT_TEMPLATE) -> Path:
    key = b"tokenizer.chat_template"
    with source.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
        version = _u32(fh)
        n_tensors, n_kv = _u64(fh), _u64(fh)
        kv_start = fh.tell()
        alignment = 32
        kept: list[tuple[int, int]] = []  # byte ranges of the entries kept
        for _ in range(n_kv):
            start = fh.tell()
            name = fh.read(_u64(fh))
            kind = _u32(fh)
            if name == b"general.alignment" and kind == 4:
                alignment = _u32(fh)
            else:
                _skip(fh, kind)
            if name != key:  # an existing template is replaced
                kept.append((start, fh.tell()))
        infos_start = fh.tell()
        for _ in range(n_tensors):
            fh.seek(_u64(fh), 1)
            fh.seek(8 * _u32(fh) + 4 + 8, 1)
        infos_end = fh.tell()
        data_start = -(-infos_end // alignment) * alignment
        fh.seek(kv_start)
        raw = fh.read(infos_end - kv_start)
    entries = b"".join(raw[a - kv_start : b - kv_start] for a, b in kept)
    value = template.encode()
    entries += struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(value)) + value
    head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, len(kept) + 1) + entries
    head += raw[infos_start - kv_start :]
    head += b"\0" * (-len(head) % alignment)
    with target.open("wb") as out, source.open("rb") as fh:
        out.write(head)
        fh.seek(data_start)
        shutil.copyfileobj(fh, out, 1 << 22)
    return target
