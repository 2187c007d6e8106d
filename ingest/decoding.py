"""The text of a file whose encoding nobody said: BOMs, BOM-less UTF-16,
UTF-8, multi-byte (CJK) guesses, then Windows-1252 and Latin-1."""

from __future__ import annotations

import codecs

__all__ = ["decode_text"]

_MULTI_BYTE_ENCODINGS = frozenset(
    [
        "big5",
        "big5hkscs",
        "cp932",
        "cp949",
        "cp950",
        "euc_jis_2004",
        "euc_jisx0213",
        "euc_jp",
        "euc_kr",
        "gb18030",
        "gb2312",
        "gbk",
        "hz",
        "iso2022_jp",
        "iso2022_kr",
        "johab",
        "shift_jis",
        "shift_jis_2004",
        "shift_jisx0213",
    ]
)


def decode_text(data: bytes) -> str:
    """The text of a file in an unknown encoding: its BOM (UTF-8/16/32), else
    BOM-less UTF-16 (NUL bytes in every other position), else UTF-8, else
    ``charset_normalizer``'s guess if it is a multi-byte (CJK) encoding, else
    Windows-1252, else Latin-1 (which
    decodes any bytes)."""
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                break
    # Before UTF-8: ASCII text in UTF-16 is valid UTF-8 too (with NUL bytes).
    sample = data[:4096]
    if len(sample) >= 4:
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        half = len(sample) // 2
        for zeros, encoding in ((odd, "utf-16-le"), (even, "utf-16-be")):
            if zeros > 0.3 * half:
                try:
                    return data.decode(encoding)
                except UnicodeDecodeError:
                    break
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
    except ImportError:  # a dependency of requests; optional here
        best = None
    # Only its multi-byte guesses (CJK): on short Western text it picks Baltic or
    # Central European code pages, where Windows-1252 reads "Besançon" right.
    if best is not None and best.encoding in _MULTI_BYTE_ENCODINGS:
        return str(best)
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")
