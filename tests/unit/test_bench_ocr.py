"""bench/ocr.py's own logic: which document a page image belongs to, and the
message when pdftoppm is missing (the benchmark itself needs Tesseract and runs
for minutes: docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from bench import ocr


@pytest.mark.parametrize(
    ("image", "document"),
    [
        ("Martin_Luther.pdf.p03.png", "Martin_Luther.pdf"),
        ("American_Broadcasting_Company.pdf.p10.png", "American_Broadcasting_Company.pdf"),
        # '.p' inside the name itself, and a name with dots
        ("Victoria_and_Albert.p.pdf.p01.png", "Victoria_and_Albert.p.pdf"),
        ("a.png.pdf.p02.png", "a.png.pdf"),
        # the one-page PDFs of --collections pages
        ("Martin_Luther.pdf.p03.pdf", "Martin_Luther.pdf"),
    ],
)
def test_a_page_image_maps_back_to_its_pdf(image: str, document: str) -> None:
    assert ocr.scanned_document(image) == document


def test_missing_pdftoppm_is_named_with_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocr.shutil, "which", lambda name: None)
    reason = ocr.pdftoppm_missing_reason()
    assert reason is not None
    assert "pdftoppm" in reason and "poppler-utils" in reason
    with pytest.raises(SystemExit) as exc:
        ocr.main(["--json", "/nonexistent/out.json"])
    assert exc.value.code == reason


def test_present_pdftoppm_is_no_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocr.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert ocr.pdftoppm_missing_reason() is None
