"""The sequence slots of one llama.cpp context (``Slot``): what each holds in
the KV cache, which slot a waiting prompt goes to and how much of it need not
be evaluated again (``place``), and each slot's sampler chain. Only the
scheduler thread (rag/generation/scheduler.py) calls these.

Prompt reuse: each slot remembers the tokens in its KV cache; a new request
goes to the free slot sharing the longest prefix with it, or copies that prefix
from whichever slot holds it (``llama_memory_seq_cp``), and only the rest of
the prompt is evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rag.generation.job import GenerationJob
from rag.generation.types import Sampling

__all__ = ["Slot", "common_prefix", "place"]


@dataclass
class Slot:
    seq_id: int
    sampler: Any  # greedy, for sampling on the CPU side
    cached: list[int] = field(default_factory=list)  # tokens in this sequence's KV cache
    job: GenerationJob | None = None
    last_used: float = 0.0
    backend_chain: Any = None  # greedy, attached to the context (at its creation, or since random sampling)
    owned_chain: Any = None  # backend_chain when the scheduler made it (freed here)
    custom: Any = None  # the current job's own sampler chain (random sampling)
    custom_on_backend: bool = False  # attached to the context in place of backend_chain

    @property
    def resident(self) -> int:
        """Tokens of ``cached`` already in the KV cache: a running sequence's
        last sampled token enters it only with the next step."""
        return self.job.n_past if self.job is not None else len(self.cached)

    def use_sampling(
        self,
        lc: Any,
        ctx: Any,
        sampling: Sampling | None,
        greedy_chain: Callable[[], Any] | None,
        backend_sampling: bool,
    ) -> None:
        """The sampler for this slot's next job: greedy (what the context was
        created with), or a chain of the job's own, attached to the context in
        place of greedy where llama.cpp can run it in the decode graph (a
        change of a sequence's sampler makes llama.cpp plan its graph again).
        ``greedy_chain`` makes a new greedy chain for the decode graph."""
        if self.custom is not None:
            if self.custom_on_backend:
                # A chain is set up for the graph once: greedy comes back as a new one.
                assert greedy_chain is not None
                fresh = greedy_chain()
                lc.llama_set_sampler(ctx, self.seq_id, fresh)
                if self.owned_chain is not None:
                    lc.llama_sampler_free(self.owned_chain)
                self.backend_chain = self.owned_chain = fresh
            lc.llama_sampler_free(self.custom)
            self.custom, self.custom_on_backend = None, False
        if sampling is None:
            return
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if sampling.top_k > 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(sampling.top_k))
        if sampling.top_p < 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(sampling.top_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(sampling.temperature))
        seed = lc.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        self.custom = chain
        if backend_sampling and greedy_chain is not None:
            self.custom_on_backend = bool(lc.llama_set_sampler(ctx, self.seq_id, chain))

    def free_samplers(self, lc: Any, ctx: Any) -> None:
        """Detaches and frees the chains the scheduler made (the context is closing)."""
        if self.custom_on_backend:
            lc.llama_set_sampler(ctx, self.seq_id, None)
        for chain in (self.custom, self.owned_chain):
            if chain is not None:
                lc.llama_sampler_free(chain)
        self.custom = self.owned_chain = None
        self.custom_on_backend = False


def place(
    lc: Any,
    mem: Any,
    job: GenerationJob,
    slots: list[Slot],
    *,
    lowest_free: bool,
    prompt_cache: bool,
    min_copy: int,
    min_keep: int = 0,
) -> tuple[Slot, int] | None:
    """The free slot for ``job`` and how many of its prompt tokens that slot's
    KV cache now holds (the rest is to be evaluated); None when no slot is
    free. ``lowest_free`` (prompts first, see the scheduler's note): the free
    slot with the lowest id. Else the free slot sharing the longest prefix.
    Either way a longer prefix held by any other slot is copied over when it
    saves more than ``min_copy`` tokens. A prefix shorter than ``min_keep``
    tokens is evaluated again rather than reused (on a GPU a prompt evaluated
    from a short kept prefix took longer than the whole prompt)."""
    free = [s for s in slots if s.job is None]
    if not free:
        return None
    if lowest_free:
        # The lowest free slot keeps the running sequences' ids together
        # (one micro-batch for their next tokens); a prefix cached
        # elsewhere is copied below (cheap on a GPU).
        slot = min(free, key=lambda s: s.seq_id)
        keep = common_prefix(slot.cached, job.tokens)
    else:
        # Longest prefix already in a free slot; else copy it from any slot.
        slot, keep = max(((s, common_prefix(s.cached, job.tokens)) for s in free),
                         key=lambda p: (p[1], -p[0].last_used))
    if not prompt_cache or keep < min_keep:
        keep = 0
    keep = min(keep, len(job.tokens) - 1)  # the last prompt token is evaluated for its logits
    if keep == 0 or not lc.llama_memory_seq_rm(mem, slot.seq_id, keep, -1):
        lc.llama_memory_seq_rm(mem, slot.seq_id, -1, -1)
        keep = 0
    if prompt_cache:
        # A donor must share more than ``bar`` tokens, so its token at ``bar``
        # must match: one comparison rules out nearly every slot before any
        # prefix is counted (a burst placed one by one among 64 slots spent
        # milliseconds between two steps counting prefixes).
        bar = keep + min_copy
        tokens = job.tokens
        ahead = [s for s in slots if s is not slot and len(s.cached) > bar and len(tokens) - 1 > bar
                 and s.cached[bar] == tokens[bar] and s.resident > bar]
        donor, donor_keep = max(
            ((s, min(common_prefix(s.cached, tokens, s.resident), len(tokens) - 1)) for s in ahead),
            key=lambda p: p[1], default=(None, 0),
        )
        if donor is not None and donor_keep > keep + min_copy and donor_keep >= min_keep:
            # Slots are separate KV streams: llama.cpp copies a whole
            # stream (device to device), then the copy is cut back.
            lc.llama_memory_seq_rm(mem, slot.seq_id, -1, -1)
            lc.llama_memory_seq_cp(mem, donor.seq_id, slot.seq_id, -1, -1)
            if lc.llama_memory_seq_rm(mem, slot.seq_id, donor_keep, -1):
                keep = donor_keep
            else:
                lc.llama_memory_seq_rm(mem, slot.seq_id, -1, -1)
                keep = 0
    return slot, keep


def common_prefix(a: list[int], b: list[int], limit: int | None = None) -> int:
    """The number of leading tokens ``a`` and ``b`` share (at most ``limit``)."""
    n = min(len(a), len(b)) if limit is None else min(len(a), len(b), limit)
    i = 0
    # Prompts that differ mostly differ early (a question, a salt): a few
    # tokens one by one before any block is copied for comparison. Placing a
    # request compares it with every slot's cache.
    while i < n and i < 16:
        if a[i] != b[i]:
            return i
        i += 1
    # Then in blocks: prompts that share a prefix share a long one.
    step = 256
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i
