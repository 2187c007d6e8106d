"""The C helpers' build: compiled once per source, loaded, a failure reported."""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import pytest

from rag.generation import cbuild

pytestmark = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("cc", "gcc", "clang")), reason="no C compiler on this machine"
)


def test_a_source_is_built_once_and_loaded(tmp_path: Path) -> None:
    source = tmp_path / "twice.c"
    source.write_text("int rag_twice(int x) { return 2 * x; }\n")
    built = cbuild.build(source, tmp_path / "out")
    assert built.exists() and built.parent == tmp_path / "out"
    mtime = built.stat().st_mtime_ns
    assert cbuild.build(source, tmp_path / "out") == built and built.stat().st_mtime_ns == mtime
    lib = cbuild.library(source, tmp_path / "out")
    assert lib is not None and lib.rag_twice(21) == 42
    assert cbuild.library(source, tmp_path / "out") is lib
    # A changed source is a new library, not the old one reused.
    source.write_text("int rag_twice(int x) { return x + x + 1; }\n")
    assert cbuild.build(source, tmp_path / "out") != built


def test_a_source_that_does_not_compile_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "broken.c"
    source.write_text("int rag_broken( {\n")
    with pytest.raises(OSError, match=r"broken\.c"):
        cbuild.build(source, tmp_path)
    assert cbuild.library(source, tmp_path) is None
    assert not list(tmp_path.glob("*.so"))


def test_the_project_s_helpers_build_and_describe_their_structs(tmp_path: Path) -> None:
    lib = cbuild.library(cbuild.SOURCE, tmp_path)
    assert lib is not None
    layout = (ctypes.c_size_t * 4)()
    lib.rag_bg_layout(layout)
    # struct ggml_tensor of 64-bit ggml: 336 bytes, view_src at 232, view_offs at 240; 12 callbacks.
    assert tuple(layout) == (336, 232, 240, 12 * ctypes.sizeof(ctypes.c_void_p))


def test_without_the_helpers_the_sampler_is_python(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.generation.native import backend_init, llama_cpp
    from rag.generation.sampler import BatchGreedy

    lc = llama_cpp()
    backend_init(lc)
    assert BatchGreedy(lc).native  # this machine has a compiler
    monkeypatch.setattr(cbuild, "library", lambda *args: None)
    greedy = BatchGreedy(lc)
    assert greedy.available and not greedy.native


def test_a_cpu_build_of_llama_cpp_has_no_split_argmax_kernel() -> None:
    # "auto" then takes the batch's argmax in two stages of stock ggml ops.
    from rag.generation.native import cuda_argmax_splits_rows

    assert cuda_argmax_splits_rows() is False
