"""rag/generation/sampler.py's ``PerGraph``: the batch-greedy samplers of one
decode graph share one argmax, and a new graph starts afresh without
llama.cpp's per-chain reset callback (each a call into Python)."""

from __future__ import annotations

from rag.generation.sampler import PerGraph


def test_a_sampler_applied_again_starts_a_new_graph() -> None:
    graphs = PerGraph()
    # Graph 1: every attached chain's sampler once, in one loop.
    graphs.applying(1)[(10, 20)] = 100
    assert graphs.applying(2)[(10, 20)] == 100
    assert graphs.applying(3)[(10, 20)] == 100
    # Graph 2, at the same addresses: sampler 1 again, so nothing is shared yet.
    assert graphs.applying(1) == {}
    graphs.shared[(10, 20)] = 200
    assert graphs.applying(2)[(10, 20)] == 200


def test_a_new_chain_starts_afresh_too() -> None:
    # A slot back from a sampled request gets a new chain: its sampler was
    # never applied, and the next graph may hold only new ones.
    graphs = PerGraph()
    graphs.applying(1)[(10, 20)] = 100
    graphs.forget()  # BatchGreedy.chain()
    assert graphs.applying(4) == {}
