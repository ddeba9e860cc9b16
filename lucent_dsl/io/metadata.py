"""Image metadata without decoding pixels: PNG text chunks, JPEG comments, WebP XMP.

A PNG's text chunks are read by walking its chunks and skipping the pixel data (`IDAT`) with a
seek, so reading the recipe of a 13000 x 13000 PNG costs a few kilobytes of memory, not gigabytes.
Compressed text is inflated with a size cap (`MAX_TEXT_BYTES`): a zip bomb in a zTXt chunk is
refused, never expanded. The cap is on the whole file, not each chunk: all its text chunks together,
read and inflated, come to at most `MAX_TEXT_BYTES` (a file of many small bombs is refused too).
A file that ends before its `IEND` chunk, or whose chunk checksums do not match (`verify=True`
checks the pixel chunks too), is reported as damaged. What is not a regular file (a FIFO named
`x.png`) is refused before it is opened (`check_regular_file`).

JPEG and WebP carry the same key -> text dict as JSON: in a JPEG comment (`COM`) segment, and in an
XMP packet of a WebP file (`encode_xmp` / `decode_xmp`). The XMP element is found with two `str.find`s
(linear in the packet's size; a regex took minutes on a crafted 2 MB packet).

Example:
    >>> import io as _io, zlib
    >>> def chunk(kind, data):
    ...     return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    >>> png = PNG_SIGNATURE + chunk(b"IHDR", bytes(13)) + chunk(b"tEXt", b"key\\x00value") + chunk(b"IEND", b"")
    >>> png_text(_io.BytesIO(png))
    {'key': 'value'}
    >>> decode_xmp(encode_xmp({"a": "<b> & c"}))
    {'a': '<b> & c'}
"""
from __future__ import annotations

import html
import json
import os
import stat
import struct
import zlib
from collections.abc import Mapping
from typing import IO, Any

from ..errors import ImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
MAX_TEXT_BYTES = 16 * 2**20
"""Most text lucent_dsl reads or inflates from one file, all its text chunks together (a recipe is a few kilobytes)."""
JPEG_COMMENT_PREFIX = b"lucent_dsl.metadata:"
_XMP_TAG = "lucent_dsl:metadata"
_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:lucent_dsl="https://pypi.org/project/lucent_dsl/ns/1/">'
    "<{tag}>{body}</{tag}></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end=\"w\"?>"
)
_BLOCK = 2**20


def check_regular_file(path: str | os.PathLike[str], what: str = "image file") -> None:
    """Refuse what is not a regular file (a FIFO, a socket, a device, a folder) before it is opened: opening a FIFO
    named `x.png` would wait forever for a writer. A missing file is left to `open`'s own error.

    Example:
        >>> check_regular_file("/dev/null")
        Traceback (most recent call last):
        ...
        lucent_dsl.errors.ImageError: image file '/dev/null' is a device, not a regular file; ...
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        kind = ("folder" if stat.S_ISDIR(mode) else "FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "socket" if stat.S_ISSOCK(mode) else "device")
        raise ImageError(f"{what} {str(path)!r} is a {kind}, not a regular file; lucent_dsl reads only regular files")


def sniff(path: str | os.PathLike[str]) -> str | None:
    """"PNG", "JPEG", "WEBP" from a file's first bytes, or None for anything else.

    Raises:
        ImageError: `path` is not a regular file (`check_regular_file`).
    """
    check_regular_file(path)
    with open(path, "rb") as f:
        head = f.read(12)
    if head.startswith(PNG_SIGNATURE):
        return "PNG"
    if head.startswith(JPEG_SIGNATURE):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _damaged(name: str, why: str) -> ImageError:
    return ImageError(f"{name!r} is a damaged PNG ({why}); write it again, or delete it")


class _Budget:
    """The text bytes still allowed from one file (`MAX_TEXT_BYTES` in all, read and inflated)."""

    def __init__(self, name: str, total: int | None = None) -> None:
        total = MAX_TEXT_BYTES if total is None else total
        self.name, self.total, self.left = name, total, total

    def take(self, n: int) -> None:
        if n > self.left:
            raise ImageError(f"{self.name!r} holds text metadata larger than {self.total} bytes (its text chunks "
                             "together, inflated); not read (lucent_dsl.io.metadata.MAX_TEXT_BYTES)")
        self.left -= n


def _inflate(data: bytes, budget: _Budget) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, budget.left + 1)  # bounded: a bomb stops one byte past what is allowed
    except zlib.error as e:
        raise _damaged(budget.name, f"a compressed text chunk does not inflate: {e}") from None
    if not d.eof and not d.unconsumed_tail and len(out) <= budget.left:
        raise _damaged(budget.name, "a compressed text chunk ends before its zlib stream does")
    budget.take(len(out) + (1 if d.unconsumed_tail else 0))
    return out


def _text_chunk(kind: bytes, data: bytes, budget: _Budget) -> tuple[str, str]:
    key, _, rest = data.partition(b"\0")
    if kind == b"tEXt":
        return key.decode("latin-1"), rest.decode("latin-1")
    if kind == b"zTXt":
        return key.decode("latin-1"), _inflate(rest[1:], budget).decode("latin-1")
    flag, rest = rest[:1], rest[2:]  # iTXt: compression flag, method, language\0, translated key\0, text
    _lang, _, rest = rest.partition(b"\0")
    _tkey, _, text = rest.partition(b"\0")
    if flag == b"\x01":
        text = _inflate(text, budget)
    try:
        return key.decode("latin-1"), text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _damaged(budget.name, f"an iTXt chunk is not UTF-8: {e}") from None


def _read_exact(f: IO[bytes], n: int, name: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _damaged(name, "the file ends in the middle of a chunk")
    return data


def _skip(f: IO[bytes], kind: bytes, length: int, verify: bool, name: str) -> None:
    if not verify:
        f.seek(length + 4, os.SEEK_CUR)  # past the end of a cut file: the next read says so
        return
    crc = zlib.crc32(kind)
    left = length
    while left:
        block = _read_exact(f, min(left, _BLOCK), name)
        crc = zlib.crc32(block, crc)
        left -= len(block)
    if struct.unpack(">I", _read_exact(f, 4, name))[0] != crc:
        raise _damaged(name, f"the checksum of a {kind.decode('latin-1')} chunk does not match")


def png_text(source: str | os.PathLike[str] | IO[bytes], *, verify: bool = False) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG as a dict, without decoding its pixels.

    `verify`: also check the checksum of every other chunk (reads the whole file, in blocks).

    Raises:
        ImageError: not a PNG, a damaged file (cut short, bad checksums), or a too large text chunk.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return _png_text(f, str(source), verify)
    return _png_text(source, "<stream>", verify)


def _png_text(f: IO[bytes], name: str, verify: bool) -> dict[str, str]:
    if f.read(8) != PNG_SIGNATURE:
        raise ImageError(f"{name!r} is not a PNG file")
    out: dict[str, str] = {}
    budget = _Budget(name)
    first = True
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise _damaged(name, "the file ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", head)
        if first and kind != b"IHDR":
            raise _damaged(name, f"the first chunk is {kind!r}, not IHDR")
        first = False
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            budget.take(length)  # before reading it
            data = _read_exact(f, length, name)
            if struct.unpack(">I", _read_exact(f, 4, name))[0] != zlib.crc32(kind + data):
                raise _damaged(name, f"the checksum of a {kind.decode()} chunk does not match")
            key, value = _text_chunk(kind, data, budget)
            out[key] = value
        else:
            _skip(f, kind, length, verify or kind == b"IEND", name)  # IEND's checksum: a file cut at its end
        if kind == b"IEND":
            return out


# --- JPEG comments and WebP XMP --------------------------------------------------------------------------


def encode_json_comment(metadata: Mapping[str, str]) -> bytes:
    """A JPEG COM payload holding `metadata` (at most 65533 bytes; longer is an ImageError)."""
    data = JPEG_COMMENT_PREFIX + json.dumps(dict(metadata), ensure_ascii=True).encode("ascii")
    if len(data) > 65533:
        raise ImageError(f"the metadata ({len(data)} bytes) does not fit in a JPEG comment (65533 bytes); write a .png")
    return data


def decode_json_comment(comment: bytes | None) -> dict[str, str]:
    """The dict of `encode_json_comment`, or {} for a comment that is not lucent_dsl's."""
    if not comment or not comment.startswith(JPEG_COMMENT_PREFIX):
        return {}
    return _json_dict(comment[len(JPEG_COMMENT_PREFIX):].decode("ascii", "replace"))


def encode_xmp(metadata: Mapping[str, str]) -> bytes:
    """An XMP packet holding `metadata` as escaped JSON (for WebP's XMP chunk)."""
    body = html.escape(json.dumps(dict(metadata), ensure_ascii=True), quote=False)
    return _XMP.format(tag=_XMP_TAG, body=body).encode("utf-8")


def decode_xmp(xmp: bytes | str | None) -> dict[str, str]:
    """The dict of `encode_xmp`, or {} for a packet without lucent_dsl's element (no XML parser runs)."""
    if not xmp:
        return {}
    if len(xmp) > MAX_TEXT_BYTES:
        raise ImageError(f"an XMP packet of {len(xmp)} bytes; lucent_dsl reads at most {MAX_TEXT_BYTES} "
                         "(lucent_dsl.io.metadata.MAX_TEXT_BYTES)")
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
    opening, closing = f"<{_XMP_TAG}>", f"</{_XMP_TAG}>"
    start = text.find(opening)  # two linear scans: no backtracking on a packet of many openings
    end = text.find(closing, start + len(opening)) if start >= 0 else -1
    return _json_dict(html.unescape(text[start + len(opening):end])) if end >= 0 else {}


def _json_dict(text: str) -> dict[str, str]:
    try:
        d: Any = json.loads(text)
    except ValueError as e:
        raise ImageError(f"the lucent_dsl metadata in the image is not valid JSON ({e})") from None
    if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in d.items()):
        raise ImageError("the lucent_dsl metadata in the image is not a JSON object of strings")
    return d
