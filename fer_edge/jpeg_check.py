"""Is a baseline JPEG's image data intact? Pillow decodes a JPEG whose headers are fine but whose
entropy-coded data is damaged without a word (libjpeg's "Corrupt JPEG data" warnings never reach
Python), so a garbled face would be predicted as if it were real. This walks the Huffman-coded
data of a baseline JPEG (no IDCT, pure Python) and reports what libjpeg would warn about: a bad
Huffman code, data that ends before the last block, bytes left over, restart markers out of order.

Progressive and arithmetic-coded JPEGs are not walked (`check_jpeg` returns None for them).
"""

from __future__ import annotations

import functools
import os

import numpy as np

_SOF_BASELINE = (0xC0, 0xC1)
_SOF_OTHER = (0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
MAX_PIXELS = 4_000_000  # beyond this the pure-Python walk costs a second or more; such files are not face crops


class CorruptJpeg(Exception):
    pass


@functools.lru_cache(maxsize=32)  # most encoders use the same few tables: build each once
def _table(counts: bytes, symbols: bytes) -> list[int]:
    """16-bit lookahead -> (code length << 8 | symbol); 0 where no code starts with those bits."""
    table = [0] * 65536
    code, k = 0, 0
    for length in range(1, 17):
        for _ in range(counts[length - 1]):
            if k >= len(symbols) or code >= 1 << length:
                raise CorruptJpeg("malformed Huffman table")
            lo = code << (16 - length)
            hi = (code + 1) << (16 - length)
            table[lo:hi] = [(length << 8) | symbols[k]] * (hi - lo)
            code += 1
            k += 1
        code <<= 1
    return table


def _segments(data: bytes, start: int) -> tuple[list[bytes], list[int], int]:
    """Entropy-coded data from `start`: unstuffed pieces between restart markers, the RST numbers
    seen, and the offset of the marker that ends the scan."""
    pieces, rsts, piece = [], [], bytearray()
    i, n = start, len(data)
    while i < n:
        j = data.find(b"\xff", i)
        if j < 0 or j + 1 >= n:
            raise CorruptJpeg("premature end of JPEG file (no end-of-image marker)")
        piece += data[i:j]
        nxt = data[j + 1]
        if nxt == 0x00:
            piece.append(0xFF)
            i = j + 2
        elif nxt == 0xFF:  # fill byte before a marker
            i = j + 1
        elif 0xD0 <= nxt <= 0xD7:
            pieces.append(bytes(piece))
            rsts.append(nxt - 0xD0)
            piece = bytearray()
            i = j + 2
        else:
            pieces.append(bytes(piece))
            return pieces, rsts, j
    raise CorruptJpeg("premature end of JPEG file (no end-of-image marker)")


def _decode(piece: bytes, n_mcus: int, blocks: list[tuple[list[int], list[int]]]) -> None:
    """Walk n_mcus MCUs of Huffman data (blocks: the (DC table, AC table) of each block of an MCU)."""
    arr = np.frombuffer(piece + b"\x00\x00\x00\x00", np.uint8).astype(np.uint32)
    words = ((arr[:-3] << 24) | (arr[1:-2] << 16) | (arr[2:-1] << 8) | arr[3:]).tolist()
    nbits = 8 * len(piece)
    pos = 0
    for _ in range(n_mcus):
        for dc, ac in blocks:
            if pos >= nbits:
                raise CorruptJpeg("premature end of data segment")
            v = dc[(words[pos >> 3] >> (16 - (pos & 7))) & 0xFFFF]
            if not v:
                raise CorruptJpeg("bad Huffman code")
            pos += (v >> 8) + (v & 0xFF)
            if v & 0xFF > 11:
                raise CorruptJpeg("DC coefficient out of range")
            k = 1
            while k < 64:
                if pos >= nbits:
                    raise CorruptJpeg("premature end of data segment")
                v = ac[(words[pos >> 3] >> (16 - (pos & 7))) & 0xFFFF]
                if not v:
                    raise CorruptJpeg("bad Huffman code")
                sym = v & 0xFF
                pos += (v >> 8) + (sym & 15)
                if sym & 15:
                    k += (sym >> 4) + 1
                elif sym == 0xF0:
                    k += 16
                else:
                    break  # end of block
            if k > 64:
                raise CorruptJpeg("AC coefficient index out of range")
    if pos > nbits:
        raise CorruptJpeg("premature end of data segment")
    if nbits - pos >= 8:
        raise CorruptJpeg(f"{(nbits - pos) // 8} extraneous bytes before marker")


def check_jpeg(data: bytes) -> str | None:
    """'' when the baseline JPEG's data walks cleanly, the fault otherwise, None when not checked
    (not a baseline JPEG, or too large to walk quickly)."""
    try:
        return _check(data)
    except CorruptJpeg as e:
        return str(e)
    except (IndexError, ValueError) as e:  # a truncated header field
        return f"malformed JPEG ({type(e).__name__})"


def _check(data: bytes) -> str | None:
    if data[:2] != b"\xff\xd8":
        return None
    dc_tables: dict[int, list[int]] = {}
    ac_tables: dict[int, list[int]] = {}
    frame = None
    restart = 0
    i = 2
    scans = 0
    while i < len(data):
        if data[i] != 0xFF:
            raise CorruptJpeg(f"expected a marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0xD9:
            return "" if scans else None
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        seg = data[i + 4 : i + 2 + length]
        if len(seg) != length - 2:
            raise CorruptJpeg("premature end of JPEG file")
        if marker in _SOF_OTHER:
            return None  # progressive / lossless / arithmetic: not walked
        if marker == 0xC4:
            j = 0
            while j < len(seg):
                tc, th = seg[j] >> 4, seg[j] & 15
                counts = seg[j + 1 : j + 17]
                total = sum(counts)
                table = _table(bytes(counts), bytes(seg[j + 17 : j + 17 + total]))
                (dc_tables if tc == 0 else ac_tables)[th] = table
                j += 17 + total
        elif marker == 0xDD:
            restart = int.from_bytes(seg[:2], "big")
        elif marker in _SOF_BASELINE:
            height, width = int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big")
            comps = {seg[6 + 3 * c]: (seg[7 + 3 * c] >> 4, seg[7 + 3 * c] & 15) for c in range(seg[5])}
            if not comps or height == 0 or width == 0 or any(h == 0 or v == 0 for h, v in comps.values()):
                raise CorruptJpeg("malformed frame header")
            if height * width > MAX_PIXELS:
                return None
            frame = (height, width, comps)
        elif marker == 0xDA:
            if frame is None:
                raise CorruptJpeg("scan before frame header")
            height, width, comps = frame
            hmax = max(h for h, _ in comps.values())
            vmax = max(v for _, v in comps.values())
            ns = seg[0]
            blocks = []
            for c in range(ns):
                cid, tables = seg[1 + 2 * c], seg[2 + 2 * c]
                if cid not in comps or tables >> 4 not in dc_tables or tables & 15 not in ac_tables:
                    raise CorruptJpeg("scan refers to an undefined component or Huffman table")
                h, v = comps[cid]
                blocks += [(dc_tables[tables >> 4], ac_tables[tables & 15])] * (h * v if ns > 1 else 1)
            if ns == 1:
                h, v = comps[seg[1]]
                cw, ch = -(-width * h // hmax), -(-height * v // vmax)
                total = -(-cw // 8) * -(-ch // 8)
            else:
                total = -(-width // (8 * hmax)) * -(-height // (8 * vmax))
            pieces, rsts, i = _segments(data, i + 2 + length)
            per = restart or total
            expected = -(-total // per)
            if len(pieces) != expected:
                raise CorruptJpeg(f"{len(pieces)} restart intervals where {expected} were expected")
            if rsts != [k % 8 for k in range(len(rsts))]:
                raise CorruptJpeg("restart markers out of order")
            for k, piece in enumerate(pieces):
                _decode(piece, min(per, total - k * per), blocks)
            scans += 1
            continue
        i += 2 + length
    raise CorruptJpeg("premature end of JPEG file (no end-of-image marker)")


def jpeg_fault(path: str | os.PathLike) -> str | None:
    """The fault in a JPEG file's image data ('' if none found, None if not a checkable JPEG)."""
    with open(path, "rb") as f:
        return check_jpeg(f.read())
