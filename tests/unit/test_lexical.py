from __future__ import annotations

import pytest

from rag.lexical import LexicalEncoder, term_id, tokenize


def test_tokens_are_folded_stemmed_and_free_of_stop_words() -> None:
    assert tokenize("The Cafés of PARIS, and the wars!") == ["cafe", "paris", "war"]
    assert tokenize("studies boxes glasses 1990s") == ["study", "box", "glass", "1990"]
    assert tokenize("The studies", stem=False) == ["studies"]
    assert tokenize("of the and") == []


def test_term_ids_are_stable_unsigned_32_bit() -> None:
    # Pinned: a changed hash would silently orphan every stored lexical vector.
    assert term_id("tesla") == 1673663823
    ids = {term_id(t) for t in ("apollo", "program", "moon", "landing")}
    assert len(ids) == 4 and all(0 <= i < 2**32 for i in ids)


def test_document_weights_are_bm25_term_frequency_parts() -> None:
    enc = LexicalEncoder(k1=1.2, b=0.75, avg_len=4)
    doc = enc.encode_document("moon moon landing rocket")  # 4 terms: length == avg_len
    weights = dict(zip(doc.indices, doc.values, strict=True))
    assert doc.indices == sorted(doc.indices)
    assert weights[term_id("moon")] == pytest.approx(2 * 2.2 / (2 + 1.2))
    assert weights[term_id("landing")] == pytest.approx(1 * 2.2 / (1 + 1.2))
    # Saturation: ten repeats weigh less than ten times one.
    many = enc.encode_document(" ".join(["moon"] * 10))
    assert many.values[0] < 2.2 and many.values[0] > weights[term_id("moon")]


def test_longer_documents_weigh_each_term_less() -> None:
    enc = LexicalEncoder(avg_len=5)
    short = enc.encode_document("tesla coil")
    long = enc.encode_document("tesla coil " + " ".join(f"word{i}" for i in range(20)))
    w_short = dict(zip(short.indices, short.values, strict=True))[term_id("tesla")]
    w_long = dict(zip(long.indices, long.values, strict=True))[term_id("tesla")]
    assert w_long < w_short
    flat = LexicalEncoder(avg_len=5, b=0.0)
    assert flat.encode_document("tesla coil").values == pytest.approx([1.0, 1.0])


def test_queries_send_each_term_once_with_weight_one() -> None:
    q = LexicalEncoder().encode_query("Who was Tesla? Tesla!")
    assert q.indices == [term_id("tesla")] and q.values == [1.0]
    assert not LexicalEncoder().encode_query("who was it")
    with pytest.raises(ValueError):
        LexicalEncoder(b=2)
    empty = LexicalEncoder().encode_document("")
    assert not empty and empty.values == []
