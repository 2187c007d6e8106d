"""HTTP layer: translates requests into calls on ``rag`` and ``ingest``."""
