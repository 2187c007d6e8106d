"""The prompt style for ``auto`` from the chat template a GGUF carries."""

from __future__ import annotations

import struct
from pathlib import Path

from rag.gguf_info import read_gguf_string
from rag.prompt import detect_prompt_style, is_gemma_template

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CHATML_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf_metadata(path: Path, entries: dict[str, object]) -> Path:
    """A GGUF v3 header with metadata only (no tensors): strings, u32 and
    string arrays, the value kinds the reader must step over."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries))
    for key, value in entries.items():
        out += _string(key)
        if isinstance(value, str):
            out += struct.pack("<I", 8) + _string(value)
        elif isinstance(value, int):
            out += struct.pack("<II", 4, value)
        else:
            assert isinstance(value, list)
            out += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(_string(str(v)) for v in value)
    path.write_bytes(out)
    return path


def test_reads_the_chat_template_past_other_metadata(tmp_path: Path) -> None:
    path = write_gguf_metadata(
        tmp_path / "m.gguf",
        {
            "general.architecture": "gemma3",
            "gemma3.context_length": 32768,
            "tokenizer.ggml.tokens": ["<pad>", "<eos>", "a", "b"],
            "tokenizer.chat_template": GEMMA_TEMPLATE,
        },
    )
    assert read_gguf_string(path, "tokenizer.chat_template") == GEMMA_TEMPLATE
    assert read_gguf_string(path, "general.architecture") == "gemma3"
    assert read_gguf_string(path, "missing.key") is None
    (tmp_path / "not.gguf").write_bytes(b"nope")
    assert read_gguf_string(tmp_path / "not.gguf", "tokenizer.chat_template") is None


def test_style_follows_the_embedded_template(tmp_path: Path) -> None:
    assert is_gemma_template(GEMMA_TEMPLATE) and not is_gemma_template(CHATML_TEMPLATE)
    gemma = write_gguf_metadata(tmp_path / "g.gguf", {"tokenizer.chat_template": GEMMA_TEMPLATE})
    chatml = write_gguf_metadata(tmp_path / "c.gguf", {"tokenizer.chat_template": CHATML_TEMPLATE})
    bare = write_gguf_metadata(tmp_path / "b.gguf", {"general.architecture": "gemma3"})
    assert detect_prompt_style(gemma) == "gemma-chat"
    assert detect_prompt_style(chatml) == "completion"
    assert detect_prompt_style(bare) == "gemma-chat"
    assert detect_prompt_style(gemma, base_model=True) == "completion"
