"""Tiny models the tests build themselves (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["build_tiny_cross_encoder"]

_WORD_TEXT = """
the a of is what who how when where which why cat cats dog sleep hours day project serial number
glider gliders pasta cook water salt boil minutes code vault access red blue team year
"""
_WORDS = _WORD_TEXT.split()


def build_tiny_cross_encoder(path: Path, *, seed: int = 0) -> Path:
    """A 1-layer BERT cross-encoder (one relevance logit) with random weights and a
    small WordPiece vocabulary, saved the way sentence-transformers saves a
    ``CrossEncoder``. Its scores are arbitrary but deterministic."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    hf_dir = path / "hf"
    hf_dir.mkdir(exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS, *"abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
        num_labels=1,
        initializer_range=0.5,  # wide weights: scores that differ visibly
    )
    BertForSequenceClassification(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    out = path / "cross-encoder"
    CrossEncoder(str(hf_dir), device="cpu").save(str(out))
    return out
