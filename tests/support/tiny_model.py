"""A second, tiny sentence-transformers model, built by the test itself.

A one-layer BERT with random weights (fixed seed) behind MiniLM's own tokenizer,
mean-pooled to 32 dimensions: another vector size than the bundled model's 384,
and poor retrieval, which is what the vector-size and quality-gate tests need.
Nothing is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["build_tiny_model"]

DIMENSION = 32


def build_tiny_model(target: Path) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    from rag.embedder import resolve_embedding_model
    from rag.settings import BUNDLED_EMBEDDING_MODEL

    torch.manual_seed(1234)
    source = resolve_embedding_model(BUNDLED_EMBEDDING_MODEL)
    bert_dir = target / "bert"
    bert_dir.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=DIMENSION,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(bert_dir)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy(source / name, bert_dir / name)
    transformer = models.Transformer(str(bert_dir), max_seq_length=128)
    dimension = getattr(transformer, "get_embedding_dimension", transformer.get_word_embedding_dimension)()
    pooling = models.Pooling(dimension, pooling_mode="mean")
    model_dir = target / "tiny-st"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(model_dir))
    return model_dir
