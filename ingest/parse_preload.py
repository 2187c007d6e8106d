"""Imported once by the parse server (``ingest.sandbox``) before it forks any
parse: every parse is a fork of a process that has already imported the readers
and loaded the spaCy model, instead of a fresh interpreter paying seconds for
them. Importing this module anywhere else does the same work in that process."""

from __future__ import annotations

import contextlib
import gc

import ingest.sandbox  # noqa: F401  (the children's entry point lives there)
from ingest.warm_up import preload

__all__: list[str] = []

preload()

# One thread per parse: documents are parsed side by side in their own
# processes, and thread pools started here would not survive the fork anyway.
with contextlib.suppress(ImportError):
    import threadpoolctl

    threadpoolctl.threadpool_limits(1)
with contextlib.suppress(ImportError):
    import torch

    torch.set_num_threads(1)

# Children share this process's memory copy-on-write; the first garbage
# collection in each would touch (and so copy) every object preloaded here.
gc.freeze()
