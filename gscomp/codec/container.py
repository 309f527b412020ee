"""The `.gsz` container: preamble, JSON header, section table, payloads (docs/gsz-format.md).

    offset size
    0      8    magic  89 47 53 5A 0D 0A 1A 0A   ("\\x89GSZ\\r\\n\\x1a\\n", PNG-style: catches text-mode
                                                  mangling and is not valid UTF-8/ASCII)
    8      2    u16 major version (readers reject other majors)
    10     2    u16 minor version (readers accept any minor: additions only)
    12     4    u32 header length H (UTF-8 JSON object), H <= 16 MiB
    16     4    u32 section count S, S <= 4096
    20     4    u32 CRC32 of bytes [0, 20) + header JSON + section table
    24     H    header JSON
    ...         section table: S entries of
                  u8 name length, name (ASCII), u8 codec length, codec (ASCII),
                  u64 offset, u64 length, u32 CRC32 of the payload
    ...         payloads, contiguous, in table order; the file ends right after the last one

All integers little-endian. The reader checks everything before it allocates anything big.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
import zlib
from typing import Any

from ..errors import FormatError, GscompError
from ..fileio import atomic_write_bytes, input_file
from ..stages.base import Section

MAGIC = b"\x89GSZ\r\n\x1a\n"
VERSION_MAJOR = 1
MINOR_OF_KEY = {"antialiased": 1}  # optional header key -> the minor version that added it
VERSION_MINOR = max(MINOR_OF_KEY.values())  # a file that uses none of them is written as 1.0
PREAMBLE = struct.Struct("<8sHHIII")  # 24 bytes
MAX_HEADER = 16 << 20
MAX_SECTIONS = 4096
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,255}$")


def pack_gsz(header: dict[str, Any], sections: list[Section]) -> bytes:
    """Serialise a header and sections into the bytes of a `.gsz` file."""
    hjson = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    if len(hjson) > MAX_HEADER:
        raise GscompError("gsz header is larger than 16 MiB")
    if len(sections) > MAX_SECTIONS:
        raise GscompError(f"too many sections ({len(sections)} > {MAX_SECTIONS})")
    names = [s.name for s in sections]
    if len(set(names)) != len(names):
        raise GscompError(f"duplicate section names in {names}")
    entry_sizes = []
    for s in sections:
        if not _NAME_RE.match(s.name) or not _NAME_RE.match(s.codec):
            raise GscompError(f"bad section name/codec {s.name!r}/{s.codec!r}")
        entry_sizes.append(2 + len(s.name) + len(s.codec) + 20)
    offset = PREAMBLE.size + len(hjson) + sum(entry_sizes)
    table = bytearray()
    for s in sections:
        payload = bytes(s.payload)
        table += bytes([len(s.name)]) + s.name.encode() + bytes([len(s.codec)]) + s.codec.encode()
        table += struct.pack("<QQI", offset, len(payload), zlib.crc32(payload))
        offset += len(payload)
    # The lowest minor that has every header key used, so files that need nothing new stay 1.0
    # (byte-identical to those of earlier writers) and older readers see what they may lack.
    minor = max([0] + [m for k, m in MINOR_OF_KEY.items() if k in header])
    pre = PREAMBLE.pack(MAGIC, VERSION_MAJOR, minor, len(hjson), len(sections), 0)[:20]
    crc = zlib.crc32(pre + hjson + bytes(table))
    out = bytearray(pre + struct.pack("<I", crc) + hjson + table)
    for s in sections:
        out += bytes(s.payload)
    return bytes(out)


class NotGsz(FormatError):
    """Bytes that are no .gsz at all (too short for one, another magic), not a damaged one."""


class _BadHeaderValue(ValueError):
    """A header value Python's json reads but gscomp does not take (its message says why)."""


def _not_json(token: str):
    raise _BadHeaderValue(f"header is not valid JSON ({token} is not JSON)")


def _finite(text: str) -> float:
    """A JSON number as a float; one beyond float64 (1e400) would come back as inf, which JSON
    cannot hold (`info --json` printed it as Infinity)."""
    v = float(text)
    if not math.isfinite(v):
        raise _BadHeaderValue(f"header number {text[:40]} is beyond float64's range")
    return v


def unpack_gsz(data: bytes | memoryview, what: str = "file") -> tuple[dict[str, Any], list[Section]]:
    """Parse and fully validate `.gsz` bytes; any problem is one FormatError line."""
    data = memoryview(data)
    size = len(data)
    if size < PREAMBLE.size:
        if not size:
            raise FormatError(f"{what}: empty file (0 bytes)")
        if bytes(data[: min(size, 8)]) == MAGIC[: min(size, 8)]:
            raise FormatError(f"{what}: truncated .gsz ({size} bytes)")
        raise NotGsz(f"{what}: not a .gsz file (too short)")
    magic, major, minor, hlen, nsec, crc = PREAMBLE.unpack(data[: PREAMBLE.size])
    if magic != MAGIC:
        raise NotGsz(f"{what}: not a .gsz file (bad magic)")
    if major != VERSION_MAJOR:
        raise FormatError(f"{what}: unsupported .gsz version {major}.{minor} (this reader: {VERSION_MAJOR}.x)")
    if PREAMBLE.size + hlen > size:
        raise FormatError(f"{what}: header length {hlen} exceeds the file size {size} (truncated?)")
    if hlen > MAX_HEADER:
        raise FormatError(f"{what}: header length {hlen} is over the limit of {MAX_HEADER} bytes")
    if nsec > MAX_SECTIONS:
        raise FormatError(f"{what}: section count {nsec} exceeds {MAX_SECTIONS}")
    pos = PREAMBLE.size + hlen
    entries = []
    for i in range(nsec):
        try:
            nl = data[pos]
            name = bytes(data[pos + 1 : pos + 1 + nl]).decode("ascii")
            pos += 1 + nl
            cl = data[pos]
            codec = bytes(data[pos + 1 : pos + 1 + cl]).decode("ascii")
            pos += 1 + cl
            if pos + 20 > size:
                raise IndexError
            off, length, pcrc = struct.unpack("<QQI", data[pos : pos + 20])
            pos += 20
        except (IndexError, UnicodeDecodeError):
            raise FormatError(f"{what}: section table is truncated or corrupt") from None
        entries.append((name, codec, off, length, pcrc))
    table_end = pos
    if zlib.crc32(bytes(data[:20]) + bytes(data[PREAMBLE.size : table_end])) != crc:
        raise FormatError(f"{what}: header checksum mismatch (corrupt file)")
    try:
        header = json.loads(bytes(data[PREAMBLE.size : PREAMBLE.size + hlen]).decode("utf-8"),
                            parse_constant=_not_json, parse_float=_finite)  # (NaN and Infinity are Python's, not JSON: `info --json` echoed them)
    except _BadHeaderValue as e:
        raise FormatError(f"{what}: {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise FormatError(f"{what}: header is not valid JSON") from None
    if not isinstance(header, dict):
        raise FormatError(f"{what}: header is not a JSON object")
    expect = table_end
    sections, seen = [], set()
    for name, codec, off, length, pcrc in entries:
        if not _NAME_RE.match(name) or not _NAME_RE.match(codec) or name in seen:
            raise FormatError(f"{what}: bad or duplicate section name {name!r}")
        seen.add(name)
        if off != expect or off + length > size:
            raise FormatError(f"{what}: section {name!r} at {off}+{length} lies outside the file ({size} bytes; truncated?)")
        payload = bytes(data[off : off + length])
        if zlib.crc32(payload) != pcrc:
            raise FormatError(f"{what}: checksum mismatch in section {name!r} (corrupt file)")
        sections.append(Section(name, codec, payload))
        expect = off + length
    if expect != size:
        raise FormatError(f"{what}: {size - expect} unexpected bytes after the last section")
    return header, sections


def write_gsz(path: str | os.PathLike, header: dict[str, Any], sections: list[Section]) -> int:
    data = pack_gsz(header, sections)
    atomic_write_bytes(path, data)
    return len(data)


def read_gsz(path: str | os.PathLike) -> tuple[dict[str, Any], list[Section]]:
    p = input_file(path)
    return unpack_gsz(p.read_bytes(), what=str(p))


__all__ = ["pack_gsz", "unpack_gsz", "write_gsz", "read_gsz", "MAGIC", "VERSION_MAJOR", "VERSION_MINOR"]
