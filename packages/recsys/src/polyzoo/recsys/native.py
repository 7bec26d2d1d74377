"""The native pass of ``polyzoo recsys prepare``: numba-compiled parsing and counting of delimited text whose
categorical values are short tokens (at most 8 ASCII bytes, as in Criteo and Avazu).

One kernel walks a block of raw bytes once: it checks every line's shape (exactly the schema's fields, a ``0``/``1``
label, integer-field values of the form ``-?[0-9]{1,18}`` or empty, no byte outside printable-and-tab ASCII
other than the line end), parses integer fields to float64, and turns each categorical value into its **key**: the
value's bytes packed little-endian into a uint64. Keys are exact (two different values of at most 8 bytes without
NUL have different keys, and the value is read back from the key), so no hash and no collision check is involved.
Each key is counted in an open-addressing table per raw column (train rows only) and replaced by its dense entry
number in that table; the caller encodes entry numbers to ids once the vocabularies are known.

The kernel *declines* a block (it returns :data:`DECLINE`) at the first byte or line outside that scope; the
caller then hands the whole preparation to the next path (``polyzoo.recsys.prepare``'s Polars streaming path, then
its block path), which accepts anything and reports malformed lines. The kernels release the GIL (``nogil``), so
blocks are parsed by several threads at once, each with its own tables.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "CAT",
    "DECLINE",
    "GROW",
    "INT",
    "LABEL",
    "OK",
    "SKIP",
    "Tables",
    "byte_classes",
    "count_lines",
    "decode_keys",
    "scan_block",
]

SKIP, LABEL, INT, CAT = 0, 1, 2, 3  # column kinds
OK, GROW, DECLINE = 0, 1, 2  # kernel outcomes
_PLAIN, _END, _OUT = 0, 1, 2  # byte classes: inside a field, the delimiter or line end, outside the scope
_COUNT_SHIFT = np.uint64(28)  # a table slot's second word: train count << 28 | entry number
_LOC_MASK = np.uint64((1 << 28) - 1)
_MAX_ENTRIES = (1 << 28) - 1
_MAX_DIGITS = 18  # |value| < 10**18 fits int64; its float64 conversion is then correctly rounded, as Python's float


def byte_classes(delimiter: int) -> np.ndarray:
    """Per byte value: inside a field (printable ASCII and tab), a field end (the delimiter, ``\\n``), or outside
    the scope (other control bytes incl. NUL and ``\\r``, and every non-ASCII byte: the other paths check UTF-8)."""
    cls = np.full(256, _OUT, dtype=np.uint8)
    cls[32:127] = _PLAIN
    cls[9] = _PLAIN
    cls[delimiter] = _END
    cls[10] = _END
    return cls


@njit(nogil=True, cache=False)
def count_lines(buf: np.ndarray) -> int:
    n = 0
    for b in buf:
        n += b == 10
    return n


@njit(nogil=True, cache=False)
def _slot(key: np.uint64, mask: int) -> int:
    h = key ^ (key >> np.uint64(33))  # MurmurHash3's 64-bit finalizer: every key bit reaches the low bits
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return np.int64(h & np.uint64(mask))


@njit(nogil=True, cache=False)
def scan_block(buf, p, r, cls, kinds, slots, train, tab, ioff, icap, nent, empty, label, ints, locs):  # fmt: skip
    """Parse ``buf`` (whole lines) from byte ``p`` / row ``r`` on; returns ``(p, r, outcome)``.

    ``kinds``/``slots``: per raw column its kind and its column in ``ints`` (INT) or ``locs`` (CAT). ``train``: 1
    where row r counts toward the vocabularies. Table of categorical column j: ``icap[j]`` slots from slot
    ``ioff[j]`` on, two words each in ``tab`` (the key, 0 = free; ``count << 28 | entry number``), ``nent[j]``
    entries; ``empty[j]`` counts empty values. Outputs per row: ``label`` (0/1),
    ``ints`` (NaN = empty), ``locs`` (entry number, −1 = empty). GROW is returned at a row start when some table
    could pass half full within the row (the caller grows it and calls again from the returned ``p``, ``r``)."""
    ncols = kinds.shape[0]
    ncat = locs.shape[1]
    n = np.uint64(buf.shape[0])
    p = np.uint64(p)
    one = np.uint64(1)
    while p < n:
        for j in range(ncat):
            if 2 * (nent[j] + 1) > icap[j]:
                return p, r, GROW
        for c in range(ncols):
            k = kinds[c]
            start = p
            key = np.uint64(0)
            value = np.int64(0)
            if k == CAT:  # pack the bytes (one inner loop per kind: the kind is fixed for the field)
                shift = np.uint64(0)
                b = buf[p]
                while cls[b] == _PLAIN:
                    if shift == np.uint64(64):
                        return p, r, DECLINE
                    key |= np.uint64(b) << shift
                    shift += np.uint64(8)
                    p += one
                    b = buf[p]
            elif k == INT:  # -?[0-9]*
                if buf[p] == 45:
                    p += one
                b = buf[p]
                while np.uint64(np.int64(b) - 48) < np.uint64(10):
                    value = value * 10 + (np.int64(b) - 48)
                    p += one
                    b = buf[p]
            else:
                b = buf[p]
                while cls[b] == _PLAIN:
                    p += one
                    b = buf[p]
            if cls[buf[p]] != _END:  # a byte outside the scope (or a non-digit in an integer field)
                return p, r, DECLINE
            width = np.int64(p - start)
            if k == CAT:
                j = slots[c]
                if width == 0:
                    locs[r, j] = -1
                    empty[j] += 1
                else:  # linear probing; one slot (key and word) is one 16-byte read
                    mask = icap[j] - 1
                    i = _slot(key, mask)
                    base = 2 * ioff[j]
                    while True:
                        at = base + 2 * i
                        if tab[at] == key:
                            tab[at + 1] += np.uint64(train[r]) << _COUNT_SHIFT
                            e = np.int64(tab[at + 1] & _LOC_MASK)
                            break
                        if tab[at] == 0:
                            e = nent[j]
                            if e > _MAX_ENTRIES:
                                return p, r, DECLINE
                            tab[at] = key
                            tab[at + 1] = (np.uint64(train[r]) << _COUNT_SHIFT) | np.uint64(e)
                            nent[j] = e + 1
                            break
                        i = (i + 1) & mask
                    locs[r, j] = e
            elif k == INT:
                neg = width > 0 and buf[start] == 45
                nd = width - 1 if neg else width
                if nd > _MAX_DIGITS or (neg and nd == 0):
                    return p, r, DECLINE
                ints[r, slots[c]] = np.nan if width == 0 else np.float64(-value if neg else value)
            elif k == LABEL:
                if width != 1 or (buf[start] != 48 and buf[start] != 49):
                    return p, r, DECLINE
                label[r] = buf[start] - 48
            # the field ended at the delimiter (more fields to come) or at the line end (the last field)
            if (buf[p] == 10) != (c == ncols - 1):
                return p, r, DECLINE
            p += one
        r += 1
    return p, r, OK


@njit(nogil=True, cache=False)
def _rehash(old, old_off, old_cap, tab, ioff, icap):
    """Move every column's entries from the old layout into the (larger) new one."""
    for j in range(ioff.shape[0]):
        mask = icap[j] - 1
        for s in range(old_off[j], old_off[j] + old_cap[j]):
            key = old[2 * s]
            if key == 0:
                continue
            i = _slot(key, mask)
            while tab[2 * (ioff[j] + i)] != 0:
                i = (i + 1) & mask
            tab[2 * (ioff[j] + i)] = key
            tab[2 * (ioff[j] + i) + 1] = old[2 * s + 1]


class Tables:
    """One thread's counting tables, one per categorical raw column (see :func:`scan_block`), grown by doubling.
    A table holds at most 2²⁸ distinct values (beyond that the kernel declines)."""

    def __init__(self, ncat: int, capacity: int = 1 << 12) -> None:
        self.nent = np.zeros(ncat, dtype=np.int64)
        self.empty = np.zeros(ncat, dtype=np.int64)
        self.icap = np.full(ncat, capacity, dtype=np.int64)
        self.ioff = _offsets(self.icap)
        self.tab = np.zeros(2 * int(self.icap.sum()), dtype=np.uint64)

    def grow(self) -> None:
        """Double every table more than a quarter full (so that growth stays amortised across columns)."""
        icap = np.where(4 * (self.nent + 1) > self.icap, 2 * self.icap, self.icap)
        ioff = _offsets(icap)
        tab = np.zeros(2 * int(icap.sum()), dtype=np.uint64)
        _rehash(self.tab, self.ioff, self.icap, tab, ioff, icap)
        self.tab, self.ioff, self.icap = tab, ioff, icap

    def entries(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Column j's keys and train counts, by entry number."""
        region = self.tab[2 * self.ioff[j] : 2 * (self.ioff[j] + self.icap[j])]
        keys, words = region[0::2], region[1::2]
        used = keys != 0
        keys, words = keys[used], words[used]
        order = np.argsort(words & _LOC_MASK, kind="stable")
        return keys[order], (words[order] >> _COUNT_SHIFT).astype(np.int64)

    def args(self) -> tuple:
        return self.tab, self.ioff, self.icap, self.nent, self.empty


def _offsets(icap: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(icap)[:-1]]).astype(np.int64)


def decode_keys(keys: np.ndarray) -> list[str]:
    """The values of packed keys (little-endian bytes, trailing NULs dropped; ASCII by construction)."""
    return [v.decode("ascii") for v in np.ascontiguousarray(keys, dtype="<u8").view("S8").tolist()]


@njit(nogil=True, cache=False)
def lookup_buckets(x, lut, missing, out):
    """``out[i] = lut[x[i] + h]`` for the integer values within the table (``len(lut) = 2h + 1``), ``missing`` for
    NaN, −1 for the rest (the caller computes those). Returns how many were left to the caller."""
    h = (lut.shape[0] - 1) // 2
    left = 0
    for i in range(x.shape[0]):
        v = x[i]
        if v != v:
            out[i] = missing
        elif -h <= v <= h:
            out[i] = lut[np.int64(v) + h]
        else:
            out[i] = -1
            left += 1
    return left


@njit(nogil=True, cache=False)
def last_line_end(buf, n: int) -> int:
    """The index of the last ``\\n`` in ``buf[:n]``, or −1."""
    for i in range(n - 1, -1, -1):
        if buf[i] == 10:
            return i
    return -1
