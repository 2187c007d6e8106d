"""The smallest correct PDF: the parse warm-up's sample and the tests' documents.

Written by hand (catalog, page tree, two standard fonts, a page per content
stream, a correct xref table) so that neither the service nor its tests need a
PDF-generation dependency. Content streams use ``/F1`` (Helvetica) and ``/F2``
(Helvetica-Bold), both WinAnsiEncoding.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pdf_document"]

_FONTS = (b"Helvetica", b"Helvetica-Bold")


def pdf_document(streams: Sequence[bytes], *, deflated: bool = False) -> bytes:
    """A PDF 1.4 with one page per content stream; ``deflated``: the streams
    are already zlib-compressed (``/FlateDecode``)."""
    first_page = 3 + len(_FONTS)
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(len(streams)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(streams)),
    ]
    objects += [b"<< /Type /Font /Subtype /Type1 /BaseFont /%s /Encoding /WinAnsiEncoding >>" % f for f in _FONTS]
    filters = b" /Filter /FlateDecode" if deflated else b""
    for i, stream in enumerate(streams):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents %d 0 R >>" % (first_page + 2 * i + 1)
        )
        objects.append(b"<< /Length %d%s >>\nstream\n%s\nendstream" % (len(stream), filters, stream))

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
