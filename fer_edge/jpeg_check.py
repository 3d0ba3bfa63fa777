"""Is a JPEG's image data intact? Pillow decodes a JPEG whose headers are fine but whose
entropy-coded data is damaged without a word (libjpeg's "Corrupt JPEG data" warnings never reach
Python), so a garbled face would be predicted as if it were real. This walks the Huffman-coded
data (no IDCT, pure Python) of baseline, extended and progressive JPEGs of any size and reports
what libjpeg would warn about: a bad Huffman code, data that ends before the last block, bytes
left over, restart markers out of order, a coefficient past the end of its block.

Arithmetic-coded, lossless and hierarchical JPEGs (which almost nothing writes) are not walked:
`check_jpeg` returns None for them. Measured against Pillow's and OpenCV's decoders in
docs/benchmarks.md ("Bad-input checks").
"""

from __future__ import annotations

import functools
import os

import numpy as np

_SOF_HUFFMAN = (0xC0, 0xC1, 0xC2)  # baseline, extended sequential, progressive
_SOF_OTHER = (0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
MAX_PIXELS = 64_000_000  # larger frames are not walked (None); fer_edge.data refuses to decode them anyway
WINDOW = 1 << 16  # bytes of entropy-coded data unpacked into 32-bit words at a time (bounds memory)
_LOOKAHEAD = 320  # a block's symbols never span more bytes than this (64 codes of <= 32 bits + slack)


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


class _Bits:
    """32-bit words at every byte of a window of the piece: `w[p >> 3]` holds bits p..p+31 of the
    window, so a 16-bit peek is one shift. `base` is the window's first byte in the piece."""

    __slots__ = ("piece", "nbits", "base", "w")

    def __init__(self, piece: bytes):
        self.piece, self.nbits, self.base = piece, 8 * len(piece), 0
        self.w = self._words(0)

    def _words(self, start: int) -> list[int]:
        chunk = self.piece[start : start + WINDOW + 8] + b"\x00\x00\x00\x00"
        a = np.frombuffer(chunk, np.uint8).astype(np.uint32)
        return ((a[:-3] << 24) | (a[1:-2] << 16) | (a[2:-1] << 8) | a[3:]).tolist()

    def refill(self, p: int) -> int:
        """Slide the window so that bit p (window-relative) has a block's worth of words after it;
        returns p relative to the new window."""
        if (p >> 3) + _LOOKAHEAD < WINDOW or self.base + WINDOW >= len(self.piece):
            return p
        shift = p >> 3
        self.base += shift
        self.w = self._words(self.base)
        return p - 8 * shift

    def end(self, p: int) -> None:
        """The piece must be used up to its last byte: what libjpeg checks at a marker."""
        pos = 8 * self.base + p
        if pos > self.nbits:
            raise CorruptJpeg("premature end of data segment")
        if self.nbits - pos >= 8:
            raise CorruptJpeg(f"{(self.nbits - pos) // 8} extraneous bytes before marker")


def _huff(w: list[int], p: int, table: list[int]) -> int:
    v = table[(w[p >> 3] >> (16 - (p & 7))) & 0xFFFF]
    if not v:
        raise CorruptJpeg("bad Huffman code")
    return v


def _sequential(bits: _Bits, n_mcus: int, blocks: list) -> None:
    """Baseline / extended: every block's DC and its 63 AC coefficients."""
    p = 0
    for _ in range(n_mcus):
        p = bits.refill(p)
        w = bits.w
        for dc, ac in blocks:
            v = _huff(w, p, dc)
            if v & 0xFF > 11:
                raise CorruptJpeg("DC coefficient out of range")
            p += (v >> 8) + (v & 0xFF)
            k = 1
            while k < 64:
                v = ac[(w[p >> 3] >> (16 - (p & 7))) & 0xFFFF]
                if not v:
                    raise CorruptJpeg("bad Huffman code")
                sym = v & 0xFF
                p += (v >> 8) + (sym & 15)
                if sym & 15:
                    k += (sym >> 4) + 1
                elif sym == 0xF0:
                    k += 16
                else:
                    break  # end of block
            if k > 64:
                raise CorruptJpeg("AC coefficient index out of range")
        if 8 * bits.base + p > bits.nbits:
            raise CorruptJpeg("premature end of data segment")
    bits.end(p)


def _dc_first(bits: _Bits, n_mcus: int, blocks: list) -> None:
    p = 0
    for _ in range(n_mcus):
        p = bits.refill(p)
        for dc, _ac in blocks:
            v = _huff(bits.w, p, dc)
            if v & 0xFF > 11:
                raise CorruptJpeg("DC coefficient out of range")
            p += (v >> 8) + (v & 0xFF)
        if 8 * bits.base + p > bits.nbits:
            raise CorruptJpeg("premature end of data segment")
    bits.end(p)


def _dc_refine(bits: _Bits, n_mcus: int, blocks: list) -> None:
    bits.end(n_mcus * len(blocks))  # one bit per block, nothing else


def _ac_first(bits: _Bits, first: int, n: int, ss: int, se: int, ac: list[int], nz: bytearray) -> None:
    """Progressive AC first pass over blocks first..first+n-1 of one component; marks in `nz`
    the coefficients it makes nonzero (a refinement pass reads a bit for each of them)."""
    p, eobrun = 0, 0
    for b in range(first, first + n):
        if eobrun:
            eobrun -= 1
            continue
        p = bits.refill(p)
        w, base, k = bits.w, 64 * b, ss
        while k <= se:
            v = _huff(w, p, ac)
            r, s = (v & 0xFF) >> 4, v & 15
            p += v >> 8
            if s:
                k += r
                if k > se:
                    raise CorruptJpeg("AC coefficient index out of range")
                p += s
                nz[base + k] = 1
                k += 1
            elif r == 15:
                k += 16
                if k > se + 1:
                    raise CorruptJpeg("AC coefficient index out of range")
            else:
                eobrun = (1 << r) - 1
                if r:
                    eobrun += (w[p >> 3] >> (32 - (p & 7) - r)) & ((1 << r) - 1)
                    p += r
                break
        if 8 * bits.base + p > bits.nbits:
            raise CorruptJpeg("premature end of data segment")
    bits.end(p)


def _ac_refine(bits: _Bits, first: int, n: int, ss: int, se: int, ac: list[int], nz: bytearray) -> None:
    """Progressive AC refinement (libjpeg's decode_mcu_AC_refine, bits only): a correction bit
    for every coefficient already nonzero, a sign bit for each new one."""
    p, eobrun = 0, 0
    for b in range(first, first + n):
        p = bits.refill(p)
        w, base, k = bits.w, 64 * b, ss
        if not eobrun:
            while k <= se:
                v = _huff(w, p, ac)
                r, s = (v & 0xFF) >> 4, v & 15
                p += v >> 8
                if s:
                    if s != 1:
                        raise CorruptJpeg("bad Huffman code (refinement size other than 1)")
                    p += 1
                elif r != 15:
                    eobrun = 1 << r
                    if r:
                        eobrun += (w[p >> 3] >> (32 - (p & 7) - r)) & ((1 << r) - 1)
                        p += r
                    break
                while k <= se:
                    if nz[base + k]:
                        p += 1
                    else:
                        if r == 0:
                            break
                        r -= 1
                    k += 1
                if s:
                    if k > se:
                        raise CorruptJpeg("AC coefficient index out of range")
                    nz[base + k] = 1
                k += 1
        if eobrun:
            p += sum(nz[base + k : base + se + 1])
            eobrun -= 1
        if 8 * bits.base + p > bits.nbits:
            raise CorruptJpeg("premature end of data segment")
    bits.end(p)


def check_jpeg(data: bytes) -> str | None:
    """'' when the JPEG's data walks cleanly, the fault otherwise, None when not checked (not a
    JPEG, or arithmetic-coded / lossless / hierarchical)."""
    try:
        return _check(data)
    except CorruptJpeg as e:
        return str(e)
    except (IndexError, ValueError, KeyError) as e:  # a truncated or inconsistent header field
        return f"malformed JPEG ({type(e).__name__})"


def _check(data: bytes) -> str | None:
    if data[:2] != b"\xff\xd8":
        return None
    dc_tables: dict[int, list[int]] = {}
    ac_tables: dict[int, list[int]] = {}
    frame = None
    nonzero: dict[int, bytearray] = {}  # progressive: per component, which AC coefficients are nonzero so far
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
        if marker < 0xC0:  # no such marker: damaged data ended the scan early
            raise CorruptJpeg(f"invalid marker 0x{marker:02x} at byte {i}")
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        seg = data[i + 4 : i + 2 + length]
        if len(seg) != length - 2 or length < 2:
            raise CorruptJpeg("premature end of JPEG file")
        if marker in _SOF_OTHER:
            return None  # lossless / arithmetic / hierarchical: not walked
        if marker == 0xC4:
            j = 0
            while j < len(seg):
                tc, th = seg[j] >> 4, seg[j] & 15
                counts = seg[j + 1 : j + 17]
                total = sum(counts)
                if len(counts) != 16 or j + 17 + total > len(seg):
                    raise CorruptJpeg("malformed Huffman table")
                table = _table(bytes(counts), bytes(seg[j + 17 : j + 17 + total]))
                (dc_tables if tc == 0 else ac_tables)[th] = table
                j += 17 + total
        elif marker == 0xDD:
            restart = int.from_bytes(seg[:2], "big")
        elif marker in _SOF_HUFFMAN:
            height, width = int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big")
            comps = {seg[6 + 3 * c]: (seg[7 + 3 * c] >> 4, seg[7 + 3 * c] & 15) for c in range(seg[5])}
            if not comps or height == 0 or width == 0 or any(not (0 < h <= 4 and 0 < v <= 4)
                                                             for h, v in comps.values()):
                raise CorruptJpeg("malformed frame header")
            if height * width > MAX_PIXELS:
                return None  # the walk's per-block state would be too large to hold
            frame = (height, width, comps, marker == 0xC2)
        elif marker == 0xDA:
            if frame is None:
                raise CorruptJpeg("scan before frame header")
            i = _scan(data, i, length, seg, frame, dc_tables, ac_tables, restart, nonzero)
            scans += 1
            continue
        i += 2 + length
    raise CorruptJpeg("premature end of JPEG file (no end-of-image marker)")


def _scan(data, i, length, seg, frame, dc_tables, ac_tables, restart, nonzero) -> int:
    """Walk one scan; returns the offset of the marker after it."""
    height, width, comps, progressive = frame
    hmax = max(h for h, _ in comps.values())
    vmax = max(v for _, v in comps.values())
    ns = seg[0]
    ss, se, ah, al = seg[1 + 2 * ns], seg[2 + 2 * ns], seg[3 + 2 * ns] >> 4, seg[3 + 2 * ns] & 15
    if not progressive:
        ss, se, ah = 0, 63, 0
    elif ss > se or se > 63 or (ss == 0) != (se == 0) or (ss and ns != 1) or al > 13:
        raise CorruptJpeg("invalid progressive scan parameters")
    blocks = []
    for c in range(ns):
        cid, tables = seg[1 + 2 * c], seg[2 + 2 * c]
        dc_needed = ss == 0 and ah == 0
        if cid not in comps or (dc_needed and tables >> 4 not in dc_tables) \
                or (se > 0 and tables & 15 not in ac_tables):
            raise CorruptJpeg("scan refers to an undefined component or Huffman table")
        h, v = comps[cid]
        blocks += [(dc_tables.get(tables >> 4), ac_tables.get(tables & 15))] * (h * v if ns > 1 else 1)
    if ns == 1:
        h, v = comps[seg[1]]
        cw, ch = -(-width * h // hmax), -(-height * v // vmax)
        total = -(-cw // 8) * -(-ch // 8)
    else:
        total = -(-width // (8 * hmax)) * -(-height // (8 * vmax))
    pieces, rsts, end = _segments(data, i + 2 + length)
    per = restart or total
    expected = -(-total // per)
    if len(pieces) != expected:
        raise CorruptJpeg(f"{len(pieces)} restart intervals where {expected} were expected")
    if rsts != [k % 8 for k in range(len(rsts))]:
        raise CorruptJpeg("restart markers out of order")
    nz = nonzero.setdefault(seg[1], bytearray(64 * total)) if ss else None
    for k, piece in enumerate(pieces):
        n = min(per, total - k * per)
        bits = _Bits(piece)
        if not progressive:
            _sequential(bits, n, blocks)
        elif ss == 0:
            (_dc_refine if ah else _dc_first)(bits, n, blocks)
        else:
            (_ac_refine if ah else _ac_first)(bits, k * per, n, ss, se, blocks[0][1], nz)
    return end


def jpeg_fault(path: str | os.PathLike) -> str | None:
    """The fault in a JPEG file's image data ('' if none found, None if not a checkable JPEG)."""
    with open(path, "rb") as f:
        return check_jpeg(f.read())
