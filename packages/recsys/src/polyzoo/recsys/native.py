"""The kernels of ``polyzoo recsys prepare``'s native path: numba-compiled parsing and counting of delimited text
whose categorical values are short tokens (at most 8 ASCII bytes, as in Criteo and Avazu).

One kernel walks a block of raw bytes once: it checks every line's shape (exactly the schema's fields, a ``0``/``1``
label, integer-field values of the form ``-?[0-9]{1,18}`` or empty, no byte outside printable-and-tab ASCII other
than the line end), turns each integer value into its bucket (read from a precomputed table of the integers
−2¹⁶..2¹⁶; beyond it, the value as float64 for the caller) and each categorical value into its **key**: the value's
bytes packed little-endian into a uint64. Keys are exact (two different values of at most 8 bytes without NUL have
different keys, and the value is read back from the key), so no hash and no collision check is involved. Each key
is counted in an open-addressing table per raw column (train rows only) and replaced by its dense entry number in
that table; the caller encodes entry numbers to ids once the vocabularies are known.

Two things keep the walk near 1.8 ns per byte and thread (a steady-state 32 MiB Criteo block, this 2-core machine;
2.6 without them): a categorical value's end is found in one 8-byte word (bit tricks flag the bytes that can end
or leave a value; anything unusual goes through the plain byte loop), and a line's table slots are prefetched when
it is read and probed one line later, so the probes rarely wait for memory.

The kernel *declines* a block (it returns :data:`DECLINE`) at the first byte or line outside that scope; the
caller then hands the whole preparation to the next path (``polyzoo.recsys.prepare``'s Polars streaming path, then
its block path), which accepts anything and reports malformed lines. The kernels release the GIL (``nogil``), so
blocks are parsed by several threads at once, each with its own tables.

The other kernels serve the same path: :func:`lookup_buckets` (buckets from such a table, for a column's further
integer fields), :func:`encode_block` (pass 2: entry numbers and buckets to the shards' ids, rows grouped by split),
:func:`count_lines` and :func:`last_line_end` (cutting the raw text into blocks of whole lines). Numba compiles
them on first use and caches the machine code beside this file (``cache=True``).
"""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

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
    "key_strings",
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


@njit(nogil=True, cache=True)
def count_lines(buf: np.ndarray) -> int:
    n = 0
    for b in buf:
        n += b == 10
    return n


@njit(nogil=True, cache=True)
def _slot(key: np.uint64, mask: int) -> int:
    h = key ^ (key >> np.uint64(33))  # MurmurHash3's 64-bit finalizer: every key bit reaches the low bits
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return np.int64(h & np.uint64(mask))


@intrinsic
def _prefetch(typingctx, arr, index):
    """Hint the CPU to bring ``arr[index]``'s cache line in (LLVM's ``llvm.prefetch``: a read, kept in all cache
    levels; a no-op where the target has no prefetch). It never faults and changes no value."""

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]), "llvm.prefetch.p0"
        )
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, index), codegen


@intrinsic
def _load_u64(typingctx, arr, index):
    """The 8 bytes of a uint8 array from ``index`` on as one native-order uint64 (an unaligned load; the caller
    keeps ``index + 8`` within the array)."""

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        return builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)

    return types.uint64(arr, index), codegen


_WORDS = sys.byteorder == "little"  # categorical values read 8 bytes at a time (the key is little-endian)
_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)
_SPACES = np.uint64(0x2020202020202020)
_KEY_MASKS = np.array([(1 << (8 * w)) - 1 for w in range(9)], dtype=np.uint64)  # the first w bytes of a word


@njit(nogil=True, cache=True, inline="always")
def _count_row(tab, ioff, icap, nent, empty, keys, first, count, locs, r) -> bool:
    """Count one line's keys (``first``: each key's first slot; 0 = empty value) and write its entry numbers to
    ``locs[:, r]``; ``False`` when a table would pass the entry limit."""
    for j in range(keys.shape[0]):
        key = keys[j]
        if key == 0:
            locs[j, r] = -1
            empty[j] += 1
            continue
        mask = icap[j] - 1
        i = first[j]
        base = 2 * ioff[j]
        while True:
            at = base + 2 * i
            if tab[at] == key:
                tab[at + 1] += count
                e = np.int64(tab[at + 1] & _LOC_MASK)
                break
            if tab[at] == 0:
                e = nent[j]
                if e > _MAX_ENTRIES:
                    return False
                tab[at] = key
                tab[at + 1] = count | np.uint64(e)
                nent[j] = e + 1
                break
            i = (i + 1) & mask
        locs[j, r] = e
    return True


@njit(nogil=True, cache=True)
def scan_block(buf, p, r, cls, kinds, slots, train, tab, ioff, icap, nent, empty, label, locs, luts, lut_of, brow,
               buckets, keep, ints, left):  # fmt: skip
    """Parse ``buf`` (whole lines) from byte ``p`` / row ``r`` on; returns ``(p, r, outcome)``.

    ``kinds``/``slots``: per raw column its kind and its slot: its integer column (INT) or its row of ``locs``
    (CAT). ``train``: 1 where row r counts toward the vocabularies. Table of categorical column j: ``icap[j]`` slots
    from slot ``ioff[j]`` on, two words each in ``tab`` (the key, 0 = free; ``count << 28 | entry number``),
    ``nent[j]`` entries; ``empty[j]`` counts empty values. Outputs per row, column-major (each output column
    contiguous): ``label`` (0/1), ``locs[slot, r]`` (entry number, −1 = empty), and per integer column s its
    bucket ``buckets[brow[s], r]``, read from the table ``luts[lut_of[s]]`` (2h + 2 entries: the buckets of the
    integers −h..h, then an empty value's), or −1 for an integer beyond ±h, whose value then goes to
    ``ints[s, r]`` (float64) and ``left[s]`` counts it; where ``keep[s]`` every value goes to ``ints[s, r]`` (NaN
    = empty), for the caller's other fields on that column. GROW is returned at a row start when some table could
    pass half full within the row (the caller grows the tables and calls again from the returned ``p``, ``r``)."""
    ncols = kinds.shape[0]
    ncat = locs.shape[0]
    n = np.uint64(buf.shape[0])
    p = np.uint64(p)
    one = np.uint64(1)
    headroom = 1 << 62  # rows that fit before some table passes half full (each row adds <= 1 entry per table)
    for j in range(ncat):
        headroom = min(headroom, icap[j] // 2 - nent[j])
    rowkeys = np.zeros(ncat, dtype=np.uint64)
    h = (luts.shape[1] - 2) // 2  # (luts[:, 2h + 1]: an empty value's bucket)
    delimiter = 10
    for b in range(256):
        if cls[b] == _END and b != 10:
            delimiter = b
    dword = _ONES * np.uint64(delimiter)
    pend_keys = np.zeros(ncat, dtype=np.uint64)  # the last line read, not yet counted: keys, their first slots
    pend_slot = np.zeros(ncat, dtype=np.int64)
    pend_r, pend_count = -1, np.uint64(0)
    while p < n:
        if headroom <= 0:  # (the pending line counted first: its slots are those of the tables before they grow)
            if pend_r >= 0 and not _count_row(tab, ioff, icap, nent, empty, pend_keys, pend_slot, pend_count, locs,
                                              pend_r):  # fmt: skip
                return p, r, DECLINE
            return p, r, GROW
        headroom -= 1
        count = np.uint64(train[r]) << _COUNT_SHIFT
        for c in range(ncols):
            k = kinds[c]
            start = p
            key = np.uint64(0)
            value = np.int64(0)
            fast = False
            if _WORDS and k == CAT and p + np.uint64(8) < n:
                # the value's end found in one 8-byte word: flag the bytes < 32, >= 127 and the delimiter (the
                # lowest flag is exact: the borrows and carries of these tricks only run upwards from a flagged
                # byte); no flag: 8 plain bytes. If the byte at the end is a field end, the key is the word's
                # first w bytes, else (a tab inside a comma-separated value, a longer value, ...) the byte loop
                x = _load_u64(buf, p)
                y = x ^ dword
                m = (((x - _SPACES) & ~x) | x | (x + _ONES) | ((y - _ONES) & ~y)) & _HIGHS
                w = np.uint64(8) if m == 0 else np.uint64(trailing_zeros(m)) >> np.uint64(3)
                if cls[buf[p + w]] == _END:
                    key = x & _KEY_MASKS[w]
                    p += w
                    fast = True
            if k == CAT:
                if not fast:  # pack the bytes (one inner loop per kind: the kind is fixed for the field)
                    shift = np.uint64(0)
                    b = buf[p]
                    while cls[b] == _PLAIN:  # (past 8 bytes the key is garbage: such a value declines below)
                        key |= np.uint64(b) << (shift & np.uint64(63))
                        shift += np.uint64(8)
                        p += one
                        b = buf[p]
            elif k == INT:  # -?[0-9]*
                if buf[p] == 45 and cls[45] != _END:  # a minus sign (unless '-' is the delimiter)
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
                if width > 8:
                    return p, r, DECLINE
                rowkeys[slots[c]] = key  # (0 = empty; counted a line later, see below)
            elif k == INT:
                neg = width > 0 and buf[start] == 45  # (a field never starts with the delimiter)
                nd = width - 1 if neg else width
                if nd > _MAX_DIGITS or (neg and nd == 0):
                    return p, r, DECLINE
                s = slots[c]
                if width == 0:
                    buckets[brow[s], r] = luts[lut_of[s], 2 * h + 1]
                    if keep[s]:
                        ints[s, r] = np.nan
                else:
                    v = -value if neg else value
                    if -h <= v <= h:
                        buckets[brow[s], r] = luts[lut_of[s], v + h]
                        if keep[s]:
                            ints[s, r] = np.float64(v)
                    else:
                        buckets[brow[s], r] = -1
                        ints[s, r] = np.float64(v)
                        left[s] += 1
            elif k == LABEL:
                if width != 1 or (buf[start] != 48 and buf[start] != 49):
                    return p, r, DECLINE
                label[r] = buf[start] - 48
            # the field ended at the delimiter (more fields to come) or at the line end (the last field)
            if (buf[p] == 10) != (c == ncols - 1):
                return p, r, DECLINE
            p += one
        # the line's keys are counted one line later: their slots are computed and prefetched now, and the previous
        # line's probes (prefetched a line ago) run first, so the table lookups rarely wait for memory
        if pend_r >= 0 and not _count_row(tab, ioff, icap, nent, empty, pend_keys, pend_slot, pend_count, locs, pend_r):
            return p, r, DECLINE
        for j in range(ncat):
            key = rowkeys[j]
            pend_keys[j] = key
            if key != 0:
                i = _slot(key, icap[j] - 1)
                pend_slot[j] = i
                _prefetch(tab, 2 * (ioff[j] + i))
        pend_r, pend_count = r, count
        r += 1
    if pend_r >= 0 and not _count_row(tab, ioff, icap, nent, empty, pend_keys, pend_slot, pend_count, locs, pend_r):
        return p, r, DECLINE
    return p, r, OK


@njit(nogil=True, cache=True)
def _move(tab, old_off, old_cap, new_off, new_cap):
    """Re-insert one table's entries from its old slots into new ones (linear probing, the same hash)."""
    mask = new_cap - 1
    for s in range(old_off, old_off + old_cap):
        key = tab[2 * s]
        if key == 0:
            continue
        i = _slot(key, mask)
        while tab[2 * (new_off + i)] != 0:
            i = (i + 1) & mask
        tab[2 * (new_off + i)] = key
        tab[2 * (new_off + i) + 1] = tab[2 * s + 1]


class Tables:
    """One thread's counting tables, one per categorical raw column (see :func:`scan_block`). They live in one
    arena of slots: a table that grows moves to twice the slots at the arena's top (its old slots become unused),
    and the arena, when full, is reallocated with the live tables packed. A table holds at most 2²⁸ distinct
    values (beyond that the kernel declines)."""

    _MARGIN = 1024  # tables this close to half full grow together (fewer returns from the kernel)

    def __init__(self, ncat: int, capacity: int = 1 << 12) -> None:
        self.nent = np.zeros(ncat, dtype=np.int64)
        self.empty = np.zeros(ncat, dtype=np.int64)
        self.icap = np.full(ncat, capacity, dtype=np.int64)
        self.ioff = np.arange(ncat, dtype=np.int64) * capacity
        self.top = ncat * capacity  # first unused slot
        self.tab = np.zeros(2 * 2 * self.top, dtype=np.uint64)

    def grow(self) -> None:
        """Double the slots of every table within ``_MARGIN`` entries of half full."""
        grow = np.flatnonzero(2 * (self.nent + self._MARGIN) > self.icap)
        need = int(2 * self.icap[grow].sum())
        if 2 * (self.top + need) > len(self.tab):  # a new arena: the live tables packed, then room to grow
            live = int(self.icap.sum())
            arena = np.zeros(2 * 2 * (live + need), dtype=np.uint64)
            off = 0
            for j in range(len(self.icap)):
                a, c = int(self.ioff[j]), int(self.icap[j])
                arena[2 * off : 2 * (off + c)] = self.tab[2 * a : 2 * (a + c)]
                self.ioff[j] = off
                off += c
            self.tab, self.top = arena, off
        for j in grow:
            cap = 2 * int(self.icap[j])
            _move(self.tab, int(self.ioff[j]), int(self.icap[j]), self.top, cap)
            self.ioff[j], self.icap[j] = self.top, cap
            self.top += cap

    def entries(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Column j's keys and train counts, by entry number."""
        region = self.tab[2 * self.ioff[j] : 2 * (self.ioff[j] + self.icap[j])]
        keys, words = region[0::2], region[1::2]
        used = keys != 0
        keys, words = keys[used], words[used]
        loc = (words & _LOC_MASK).astype(np.int64)  # a permutation of 0 .. nent-1
        by_key, by_count = np.empty_like(keys), np.empty(len(keys), dtype=np.int64)
        by_key[loc], by_count[loc] = keys, (words >> _COUNT_SHIFT).astype(np.int64)
        return by_key, by_count

    def args(self) -> tuple:
        return self.tab, self.ioff, self.icap, self.nent, self.empty


def key_strings(keys: np.ndarray, name: str = "v") -> pl.Series:
    """The values of packed keys as a string Series (each key's little-endian bytes, trailing NULs dropped;
    ASCII by construction)."""
    return pl.Series(name, np.ascontiguousarray(keys, dtype="<u8").view("S8")).cast(pl.String)


def decode_keys(keys: np.ndarray) -> list[str]:
    """:func:`key_strings` as a list."""
    return key_strings(keys).to_list()


@njit(nogil=True, cache=True)
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


@njit(nogil=True, cache=True)
def last_line_end(buf, n: int) -> int:
    """The index of the last ``\\n`` in ``buf[:n]``, or −1."""
    for i in range(n - 1, -1, -1):
        if buf[i] == 10:
            return i
    return -1


@njit(nogil=True, cache=True)
def _bucket_ids(col, pos, dst):
    for r in range(col.shape[0]):
        dst[pos[r]] = col[r]


@njit(nogil=True, cache=True)
def _entry_ids(col, pos, ids, dst):
    for r in range(col.shape[0]):
        e = col[r]
        dst[pos[r]] = ids[e] if e >= 0 else 0


@njit(nogil=True, cache=True)
def encode_block(raw, offsets, widths, n, src, moff, maps, starts, label_out, out):
    """The output rows of one block of the intermediate, grouped by split (split s from ``starts[s]`` on, file
    order kept within a split). Intermediate column c (label, split code, ...) is the signed integers of width
    ``widths[c]`` (1, 2 or 4 bytes) at byte ``offsets[c]`` of ``raw`` (a multiple of 8), ``n`` of them; read in
    place, in their stored width. Writes ``label_out`` (float32) and ``out[f]`` per output field f, read from
    column ``src[f]``: an integer field's local bucket as it is (``moff[f] < 0``; it is the field's id), a
    categorical field's entry number e as ``maps[moff[f] + e]`` (−1 = empty: 0)."""
    codes = raw[offsets[1] : offsets[1] + n].view(np.int8)
    labels = raw[offsets[0] : offsets[0] + n].view(np.int8)
    pos = np.empty(n, dtype=np.int64)
    cursor = starts.copy()
    for r in range(n):
        s = codes[r]
        pos[r] = cursor[s]
        cursor[s] += 1
    for r in range(n):
        label_out[pos[r]] = np.float32(labels[r])
    for f in range(src.shape[0]):
        a = offsets[src[f]]
        w = widths[src[f]]
        dst = out[f]
        # one call per stored width (numba compiles each): the column is read where it lies
        if moff[f] < 0:
            if w == 1:
                _bucket_ids(raw[a : a + n].view(np.int8), pos, dst)
            elif w == 2:
                _bucket_ids(raw[a : a + 2 * n].view(np.int16), pos, dst)
            else:
                _bucket_ids(raw[a : a + 4 * n].view(np.int32), pos, dst)
        else:
            ids = maps[moff[f] :]
            if w == 1:
                _entry_ids(raw[a : a + n].view(np.int8), pos, ids, dst)
            elif w == 2:
                _entry_ids(raw[a : a + 2 * n].view(np.int16), pos, ids, dst)
            else:
                _entry_ids(raw[a : a + 4 * n].view(np.int32), pos, ids, dst)
