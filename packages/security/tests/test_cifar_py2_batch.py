"""CIFAR-10 python batches as the real files are: Python 2 ``cPickle`` protocol-2 streams, not Python 3 pickles.

The real ``cifar-10-batches-py/data_batch_N`` / ``test_batch`` files (https://www.cs.toronto.edu/~kriz/cifar.html:
"a Python pickled object produced with cPickle"; Python 3 reads them with ``pickle.load(f, encoding='bytes')``) hold
a dict ``{'batch_label': str, 'labels': [int]*N, 'data': uint8 ndarray (N, 3072), 'filenames': [str]*N}``, keys in
that order (the order Python 3 shows for ``dict_keys``). Python 2 ``str`` is pickled with the STRING opcodes
(SHORT_BINSTRING ``U`` / BINSTRING ``T``), which Python 3 decodes under ``encoding`` (``bytes`` gives bytes keys,
``latin1`` gives str), and the array as ``numpy.core.multiarray._reconstruct(ndarray, (0,), 'b')`` followed by a
BUILD with the state ``(1, shape, dtype('u1'), False, raw bytes)`` -- no ``_codecs.encode`` (what Python 3 writes
for bytes at protocol 2). ``_py2_batch`` assembles that opcode stream by hand, as cPickle writes it (memo BINPUTs,
MARK ... SETITEMS / APPENDS), so the loader is tested on the real encoding rather than on our own pickle writer.
"""

import pickle
import pickletools
import struct

import numpy as np
import pytest

from polyzoo.security.data import load_cifar10, safe_unpickle


class _Stream:
    """Protocol-2 opcode writer with cPickle's memo numbering (BINPUT after each memoised object)."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self.memo = 0

    def put(self) -> None:
        self.memo += 1
        self.out += b"q" + bytes([self.memo])  # BINPUT

    def string(self, s: bytes) -> None:  # a Python 2 str
        self.out += (b"U" + bytes([len(s)])) if len(s) < 256 else (b"T" + struct.pack("<i", len(s)))
        self.out += s
        self.put()

    def int(self, v: int) -> None:
        self.out += (
            b"K" + bytes([v])
            if 0 <= v < 256
            else b"M" + struct.pack("<H", v)
            if v < 65536
            else b"J" + struct.pack("<i", v)
        )

    def glob(self, module: bytes, name: bytes) -> None:
        self.out += b"c" + module + b"\n" + name + b"\n"
        self.put()


def _py2_batch(batch_label: bytes, labels: list[int], data: np.ndarray, filenames: list[bytes]) -> bytes:
    s = _Stream()
    s.out += b"}"  # EMPTY_DICT
    s.put()
    s.out += b"("  # MARK
    s.string(b"batch_label")
    s.string(batch_label)
    s.string(b"labels")
    s.out += b"]"  # EMPTY_LIST
    s.put()
    s.out += b"("
    for v in labels:
        s.int(v)
    s.out += b"e"  # APPENDS
    s.string(b"data")
    s.glob(b"numpy.core.multiarray", b"_reconstruct")
    s.glob(b"numpy", b"ndarray")
    s.int(0)
    s.out += b"\x85"  # TUPLE1 -> (0,)
    s.out += b"U\x01b"  # 'b': temporaries of __reduce__ get no BINPUT (cPickle memoises only shared objects)
    s.out += b"\x87R"  # TUPLE3, REDUCE
    s.put()
    s.out += b"("
    s.int(1)  # pickle version of the ndarray state
    s.int(data.shape[0])
    s.int(data.shape[1])
    s.out += b"\x86"  # TUPLE2 -> shape
    s.glob(b"numpy", b"dtype")
    s.out += b"U\x02u1"
    s.int(0)
    s.int(1)
    s.out += b"\x87R"
    s.put()
    s.out += b"("
    s.int(3)
    s.out += b"U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # dtype state (3, '|', None x3, -1, -1, 0), BUILD
    s.out += b"\x89"  # NEWFALSE: C order
    s.out += b"T" + struct.pack("<i", data.nbytes) + data.tobytes()  # the raw bytes as a Python 2 str
    s.out += b"tb"  # TUPLE, BUILD
    s.string(b"filenames")
    s.out += b"]"
    s.put()
    s.out += b"("
    for f in filenames:
        s.string(f)
    s.out += b"e"
    s.out += b"u."  # SETITEMS, STOP
    return bytes(s.out)


def _write_root(root, n=3):
    rng = np.random.default_rng(0)
    root.mkdir()
    expected = {}
    names = [(f"data_batch_{i}", f"training batch {i} of 5") for i in range(1, 6)] + [
        ("test_batch", "testing batch 1 of 1")
    ]
    for name, label in names:
        labels = [int(v) for v in rng.integers(0, 10, n)]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        files = [f"img_{name}_{k:06d}.png".encode() for k in range(n)]
        (root / name).write_bytes(_py2_batch(label.encode(), labels, data, files))
        expected[name] = (labels, data)
    return expected


def test_stream_is_a_python2_cpickle_stream(tmp_path):
    blob = _py2_batch(
        b"testing batch 1 of 1",
        [3, 8],
        np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251,
        [b"a.png", b"b.png"],
    )
    ops = {op.name for op, _arg, _pos in pickletools.genops(blob)}
    assert blob[:2] == b"\x80\x02" and "SHORT_BINSTRING" in ops and "BINSTRING" in ops
    assert not ops & {"BINUNICODE", "SHORT_BINUNICODE", "SHORT_BINBYTES", "BINBYTES"}  # no Python 3 str/bytes
    assert b"_codecs" not in blob
    # the standard library reads it as the CIFAR page says (encoding='bytes'), and as numpy recommends (latin1)
    ref = pickle.loads(blob, encoding="bytes")
    assert list(ref) == [b"batch_label", b"labels", b"data", b"filenames"]
    assert ref[b"labels"] == [3, 8] and ref[b"filenames"] == [b"a.png", b"b.png"]
    assert ref[b"data"].dtype == np.uint8 and ref[b"data"].shape == (2, 3072)
    latin = pickle.loads(blob, encoding="latin1")
    assert list(latin) == ["batch_label", "labels", "data", "filenames"]
    np.testing.assert_array_equal(latin["data"], ref[b"data"])


def test_loader_reads_python2_batches(tmp_path):
    expected = _write_root(tmp_path / "cifar-10-batches-py")
    data = load_cifar10(tmp_path)
    assert data.train_x.shape == (15, 3, 32, 32) and data.test_x.shape == (3, 3, 32, 32)
    train_labels = [v for i in range(1, 6) for v in expected[f"data_batch_{i}"][0]]
    assert data.train_y.tolist() == train_labels and data.test_y.tolist() == expected["test_batch"][0]
    # channel-major rows: the first 1024 values are red, row-major (the CIFAR page's layout), then normalised
    raw = expected["test_batch"][1][1]
    mean, std = data.mean, data.std
    want = (raw.reshape(3, 32, 32).astype(np.float32) / 255.0 - np.array(mean, np.float32)[:, None, None]) / np.array(
        std, np.float32
    )[:, None, None]
    np.testing.assert_allclose(data.test_x[1].numpy(), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("encoding", ["bytes", "latin1"])
def test_restricted_unpickler_accepts_the_real_globals(tmp_path, encoding):
    path = tmp_path / "test_batch"
    data = np.full((1, 3072), 7, np.uint8)
    path.write_bytes(_py2_batch(b"testing batch 1 of 1", [9], data, [b"x.png"]))
    obj = safe_unpickle(path, encoding=encoding)
    key = (lambda k: k.encode()) if encoding == "bytes" else (lambda k: k)
    np.testing.assert_array_equal(obj[key("data")], data)
    assert obj[key("labels")] == [9]
