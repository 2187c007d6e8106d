"""The composition root: builds each process of the service from one ``Settings``.

``rag serve``, ``rag api``, ``rag worker`` and ``rag beat`` (and the tests) start
here; nothing else wires adapters together. It sits outside ``rag/`` (which
never imports ``ingest/``) and outside ``api/`` (which only translates HTTP).
"""

from runtime.wiring import BeatRuntime, Parts, Role, Runtime, build_beat, build_runtime, resolve_prompt_style

__all__ = ["BeatRuntime", "Parts", "Role", "Runtime", "build_beat", "build_runtime", "resolve_prompt_style"]
