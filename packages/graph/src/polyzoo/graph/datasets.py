"""Fairness graph datasets as PyG ``InMemoryDataset`` classes reading the standard raw files from ``root``.

Every ``Data`` carries ``x`` (N, F) float32, ``edge_index`` (2, E) undirected without self-loops or duplicates (the
layers add their own single self-loop, as DGL's ``GraphConv`` over the official graph's structure does), ``y`` (N,)
int64 in {0, 1} (``-1`` = unknown label), ``sens`` (N,) int64 in {0, 1} (``-1`` = unknown), ``train_mask`` /
``val_mask`` / ``test_mask``, and the official loader's adjacency matrix *values* as ``adj_edge_index`` (2, nnz) /
``adj_edge_weight`` (nnz,) for consumers that use them (e.g. label propagation).

Two protocols (``protocol=``), because RELIANT's own loaders differ from the ecosystem's:

- ``"reliant"`` (**default** of the library, the CLI ``--protocol`` and the RELIANT reproduction): RELIANT's
  ``src/CPF-master/data/utils.py`` (``load_german``, ``load_bail``, ``load_aminer``, ``load_tensor_data`` with
  ``preprocess_adj`` = ``normalize_adj``) and, for Credit, ``data/get_dataset.py`` → ``make_dataset.py``
  (``yushundong/RELIANT``). The paper's datasets went through these, so numbers comparable to the paper need it.
- ``"pygdebias"``: PyGDebias ``pygdebias/datasets/datasets.py`` (NIFTY / FairGNN conventions).

Per dataset (raw files in ``root``; sensitive attribute / label):

- ``German`` (german.csv, german_edges.txt; Gender, Female = 1 / GoodCustomer, −1 → 0; features: all columns but the
  label, OtherLoansAtStore and PurposeOfLoan). reliant: only LoanAmount, Age and LoanDuration min-max scaled to
  [−1, 1], the rest raw; split seed 0, ``label_number`` 1000 (per class train min(50 %, 500), val 50–75 %, test
  75–100 %). pygdebias: every feature column scaled to [−1, 1]; seed 20, ``label_number`` 100.
- ``Credit`` (credit.csv, credit_edges.txt; Age / NoDefaultNextMonth; all columns but the label and Single).
  reliant: RELIANT has no credit loader; ``credit`` falls through to ``load_dataset_and_split``, which reads a
  ``credit.npz`` that the repository does not ship, ``standardize()``s it (unweighted, undirected, no self-loops,
  **largest connected component**), turns the features into **binary** bag-of-words (non-zero → 1) and splits
  with seed 20, ``label_number`` 1000. polyzoo builds that graph from credit.csv (assumption: the npz held these
  columns). pygdebias: features scaled to [−1, 1], seed 20, ``label_number`` 6000.
- ``Bail`` / Recidivism (bail.csv, bail_edges.txt; WHITE / RECID; all columns but the label). reliant: features
  **row-normalised** (each row divided by its sum); split read from ``root/split/{train,val,test}_split.npy``
  when present (the official repository ships them), else per class 30 / 20 / 50 % with seed 20.
  pygdebias: features scaled to [−1, 1]; seed 20, ``label_number`` 100.
- ``NBA`` (nba.csv, nba_relationship.txt user-id pairs; country / SALARY, −1 unknown) and ``PokecZ`` / ``PokecN``
  (region_job(_2).csv, …_relationship.txt; region / I_am_working_in_field, > 1 → 1): FairGNN's ``load_pokec``
  split (seed 20; labelled nodes shuffled; train the first min(50 %, ``label_number``) with 100 for NBA and 500
  for Pokec; NBA: test = the rest with a known sens, **val = the rest before that filter** (official
  ``test_idx=True``: ``idx_val = idx_test`` is assigned before the sens filter, so val may hold nodes with
  unknown sens — none in the real NBA file, where every labelled player has a known country); Pokec: val 50–75 %,
  test 75–100 % with a known sens); sens appended as the last feature; NBA features scaled to [−1, 1] as
  FairGNN's training scripts do. RELIANT has no NBA/Pokec loader: reliant = this split with RELIANT's
  adjacency preprocessing.
- ``AMinerS`` / ``AMinerL`` (edgelist_Small.txt, labels_Small.txt, sens_Small.txt, X_Small.npz; ``_LCC`` for L;
  RELIANT "DBLP" / "DBLP-L", PyGDebias ``LCC_small`` / ``LCC``): sens == 2, label == 3 (RELIANT ``load_aminer``);
  split from ``root/split/*.npy`` when present, else per class 50 / 25 / 25 % with seed 20. reliant: the raw
  sparse features. pygdebias: sens appended as a last feature column (PyGDebias' own LCC split is an unseeded
  random 80/10/10, not reproducible, so RELIANT's split is kept).

Adjacency values (``adj_edge_weight``): reliant ``D⁻¹(A + 2I)`` — the loaders add one identity and
``normalize_adj`` adds a second before row-normalising (Credit: ``D⁻¹(A + I)``, its npz path adds none) —;
pygdebias ``A + I`` unnormalised. ``A`` is the official symmetrisation ``max(M, Mᵀ)`` of the raw edge counts M.

Splits reproduce the official index sets exactly: Python's ``random.Random(seed).shuffle`` is the same
permutation as the official ``random.seed(seed); random.shuffle(...)`` (the shuffle depends only on the seed and the
length). ``split_seed`` / ``label_number`` override the protocol's values.

Processed cache: ``<processed_dir>/<name>_<settings>_v2.npz`` plus nothing else. It is read with
``numpy.load(allow_pickle=False)`` — never through PyG's ``torch.load(weights_only=False)`` fallback, and PyG's
``pre_transform.pt`` / ``pre_filter.pt`` files are neither written nor read — and it records what it was built
from (SHA-256 and size of every raw file, protocol and settings); a cache that does not match, or cannot be read,
is rebuilt.

Deviations (documented, deliberate):
- The official loaders crash with an opaque ``TypeError`` on edges naming unknown nodes; here a ``ValueError``
  names the file, the line and the bad node. Self-loops in the raw edges are dropped from ``edge_index``.
- Min-max normalisation maps a constant column to 0 instead of dividing by zero (NaN in the official code).
- NBA's official split sets the validation set equal to the test set (model selection on test nodes). It is kept
  as the default for faithfulness; ``split="disjoint"`` gives the Pokec rule (val 50–75 %, test 75–100 %) instead.
- AMiner ids in the label/sens files place values by id (PyGDebias assumes the file is in id order).
- The official loaders write split files into the data folder when absent; polyzoo writes nothing there but the
  processed cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

log = logging.getLogger(__name__)

PROTOCOLS = ("reliant", "pygdebias")
DEFAULT_PROTOCOL = "reliant"
CACHE_VERSION = 2

__all__ = [
    "DATASETS",
    "DEFAULT_PROTOCOL",
    "NBA",
    "PROTOCOLS",
    "AMinerL",
    "AMinerS",
    "Bail",
    "Credit",
    "FairGraphDataset",
    "German",
    "PokecN",
    "PokecZ",
    "build_data",
    "load_dataset",
    "official_adjacency",
    "read_edge_list",
    "split_labelled",
    "split_per_class",
]


# ----------------------------------------------------------------------------------------------- raw file readers


def read_edge_list(path: Path, id_map: dict[int, int] | None = None, num_nodes: int | None = None) -> np.ndarray:
    """Read a whitespace-separated two-column edge list (ints, or floats holding integers as in german_edges.txt).

    Args:
        path: the file.
        id_map: raw id → node index (NBA/Pokec user ids); identity when ``None``.
        num_nodes: with ``id_map=None``, indices must lie in ``[0, num_nodes)``.

    Returns:
        (E, 2) int64 node indices.

    Raises:
        ValueError: a line without two integer fields, or a node outside the node range / not in ``id_map``
            (naming the file, line and value).
    """
    rows: list[tuple[int, int]] = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}:{lineno}: expected two node ids per line, got {len(fields)} fields")
            pair = []
            for tok in fields:
                try:
                    v = int(tok)
                except ValueError:
                    try:
                        fv = float(tok)
                    except ValueError:
                        raise ValueError(f"{path}:{lineno}: {tok!r} is not a node id") from None
                    if not fv.is_integer():
                        raise ValueError(f"{path}:{lineno}: {tok!r} is not an integer node id") from None
                    v = int(fv)
                pair.append(v)
            rows.append((pair[0], pair[1]))
    edges = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    if id_map is not None:
        out = np.empty_like(edges)
        for i, (a, b) in enumerate(edges):
            for j, v in enumerate((a, b)):
                idx = id_map.get(int(v))
                if idx is None:
                    raise ValueError(f"{path}: edge {i + 1} ({a} {b}): id {v} is not a node id of the feature file")
                out[i, j] = idx
        return out
    if num_nodes is not None and len(edges):
        bad = np.nonzero((edges < 0) | (edges >= num_nodes))[0]
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"{path}: edge {i + 1} ({edges[i, 0]} {edges[i, 1]}) points outside the node range "
                f"[0, {num_nodes}) ({len(bad)} such edges)"
            )
    return edges


def _read_id_value(path: Path, num_nodes: int | None = None) -> np.ndarray:
    """AMiner ``id<TAB>value`` files → values placed by id (float64)."""
    ids, vals = [], []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'id<TAB>value', got {len(fields)} fields")
            try:
                ids.append(int(float(fields[0])))
                vals.append(float(fields[1]))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: not numeric: {line.strip()!r}") from None
    n = num_nodes if num_nodes is not None else len(ids)
    ids_a = np.asarray(ids)
    if len(ids_a) != n or sorted(ids) != list(range(n)):
        raise ValueError(f"{path}: expected ids 0..{n - 1} exactly once each, got {len(ids_a)} rows")
    out = np.empty(n)
    out[ids_a] = vals
    return out


def _feature_norm(x: np.ndarray) -> np.ndarray:
    """PyGDebias ``feature_norm``: per column 2·(x − min)/(max − min) − 1 (a constant column → 0)."""
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    out = 2 * (x - lo) / span - 1
    out[:, hi <= lo] = 0.0
    return out.astype(np.float32)


def _scale_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> pd.DataFrame:
    """RELIANT ``load_german``: min-max scale only ``columns`` to [−1, 1] (a constant column → 0)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing} to scale")
    df = df.copy()
    for c in columns:
        col = df[c].astype(np.float64)
        lo, hi = col.min(), col.max()
        df[c] = 2 * (col - lo) / (hi - lo) - 1 if hi > lo else 0.0
    return df


def _row_normalize(x: np.ndarray) -> np.ndarray:
    """RELIANT ``normalize``: each row divided by its sum (a zero-sum row stays 0)."""
    rowsum = x.sum(axis=1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        inv = np.where(rowsum != 0, 1.0 / rowsum, 0.0)
    return (x * inv[:, None]).astype(np.float32)


def official_adjacency(
    edges: np.ndarray, num_nodes: int, identities: int, row_normalize: bool, binarize: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The official loaders' adjacency matrix as (2, nnz) indices (row-major) and (nnz,) float32 values.

    ``M`` counts the raw edges (duplicates summed, as ``sp.coo_matrix``); ``binarize=False`` symmetrises like the
    official ``adj + adj.T.multiply(adj.T > adj) - adj.multiply(adj.T > adj)`` (= ``max(M, Mᵀ)``), ``binarize=True``
    like CPF's ``standardize()`` (unweighted ``M + Mᵀ`` → 1, diagonal removed); then ``identities``·I is added and,
    with ``row_normalize``, each row is divided by its sum (``normalize``).
    """
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    m = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num_nodes, num_nodes)).tocsr()
    if binarize:
        m = ((m + m.T) != 0).astype(np.float64).tolil()
        m.setdiag(0)
        m = m.tocsr()
    else:
        m = m.maximum(m.T)
    m = (m + identities * sp.eye(num_nodes, format="csr")).tocsr()
    if row_normalize:
        rowsum = np.asarray(m.sum(axis=1)).ravel()
        with np.errstate(divide="ignore"):
            inv = np.where(rowsum != 0, 1.0 / rowsum, 0.0)
        m = sp.diags(inv) @ m
    m = sp.csr_matrix(m)
    m.eliminate_zeros()
    m.sort_indices()
    coo = m.tocoo()
    return np.stack([coo.row, coo.col]).astype(np.int64), coo.data.astype(np.float32)


def _binary_column(values: np.ndarray, where: str, allow_unknown: bool = False) -> np.ndarray:
    arr = np.asarray(values)
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected numeric 0/1 values, found {sorted(set(map(str, arr)))[:5]}") from None
    allowed = {0.0, 1.0, -1.0} if allow_unknown else {0.0, 1.0}
    bad = sorted(set(np.unique(arr).tolist()) - allowed)
    if bad:
        extra = " (or -1 for unknown)" if allow_unknown else ""
        raise ValueError(f"{where}: the sensitive attribute must be binary 0/1{extra}; found also {bad[:10]}")
    return arr.astype(np.int64)


# ------------------------------------------------------------------------------------------------------- splits


def split_per_class(
    labels: np.ndarray, seed: int, label_number: int | None, bounds: tuple[float, float] = (0.5, 0.75)
) -> tuple[np.ndarray, ...]:
    """NIFTY/PyGDebias/RELIANT per-class rule; with ``label_number=None`` RELIANT's uncapped rules.

    Classes 0 and 1 are shuffled by one ``random.Random(seed)`` (class 0 first). With ``bounds = (a, b)`` train
    takes the first min(a, label_number // 2) of each class, val a–b, test b–100 % (positions ``int(a·n)``,
    ``int(b·n)`` as the official code computes them). German/Credit/Bail (PyGDebias) and AMiner: (0.5, 0.75);
    RELIANT's Bail fallback: (0.3, 0.5) uncapped.
    """
    lo, hi = bounds
    rng = random.Random(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in (0, 1):
        idx = list(np.nonzero(labels == c)[0])
        rng.shuffle(idx)
        n = len(idx)
        cap = int(lo * n) if label_number is None else min(int(lo * n), label_number // 2)
        parts[0].append(np.asarray(idx[:cap], dtype=np.int64))
        parts[1].append(np.asarray(idx[int(lo * n) : int(hi * n)], dtype=np.int64))
        parts[2].append(np.asarray(idx[int(hi * n) :], dtype=np.int64))
    return tuple(np.concatenate(p) for p in parts)


def _split_files(root: Path, n: int) -> tuple[np.ndarray, ...] | None:
    """``root/split/{train,val,test}_split.npy`` (RELIANT's shipped Bail/AMiner splits) when all three exist; read
    with ``allow_pickle=False``."""
    paths = [root / "split" / f"{k}_split.npy" for k in ("train", "val", "test")]
    if not all(p.is_file() for p in paths):
        return None
    out = []
    for p in paths:
        try:
            a = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{p}: not a plain numeric .npy index array ({e})") from None
        if a.ndim != 1 or (a.size and (not np.all(np.equal(np.mod(a, 1), 0)) or a.min() < 0 or a.max() >= n)):
            raise ValueError(f"{p}: expected a 1-D array of node indices in [0, {n})")
        out.append(a.astype(np.int64))
    return tuple(out)


def split_labelled(
    labels: np.ndarray, sens: np.ndarray, seed: int, label_number: int, test_is_rest: bool
) -> tuple[np.ndarray, ...]:
    """FairGNN/PyGDebias ``load_pokec`` rule (NBA with ``test_is_rest=True``, Pokec with ``False``).

    With ``test_is_rest`` the validation set is the test set *before* dropping nodes of unknown sens (official
    ``idx_val = idx_test`` precedes the filter); the test set keeps only nodes with a known sens.
    """
    rng = random.Random(seed)
    idx = list(np.nonzero(labels >= 0)[0])
    rng.shuffle(idx)
    n = len(idx)
    train = idx[: min(int(0.5 * n), label_number)]
    val = idx[int(0.5 * n) : int(0.75 * n)]
    test = idx[label_number:] if test_is_rest else idx[int(0.75 * n) :]
    if test_is_rest:
        val = test  # official: assigned before the sens filter below, so val keeps nodes with unknown sens
    known = set(np.nonzero(sens >= 0)[0].tolist())
    test = sorted(known & set(test))
    return tuple(np.asarray(a, dtype=np.int64) for a in (train, val, test))


# --------------------------------------------------------------------------------------------------- building


def build_data(
    x: np.ndarray,
    edges: np.ndarray,
    y: np.ndarray,
    sens: np.ndarray,
    splits: Sequence[np.ndarray],
    where: str = "graph",
    adjacency: tuple[np.ndarray, np.ndarray] | None = None,
) -> Data:
    """Assemble a checked ``Data`` (undirected, coalesced, self-loops removed) from numpy arrays.

    Args:
        x: (N, F) features. edges: (E, 2) node indices. y: (N,) labels (−1 unknown). sens: (N,) in {0, 1, −1}.
        splits: train, val, test node indices.
        where: the name used in error messages.
        adjacency: the official adjacency matrix (indices, values), stored as ``adj_edge_index`` / ``adj_edge_weight``.

    Raises:
        ValueError: edges outside [0, N), non-binary ``sens``/``y``, or a split whose evaluated nodes miss a group.
    """
    n = x.shape[0]
    if len(y) != n or len(sens) != n:
        raise ValueError(f"{where}: {n} feature rows but {len(y)} labels and {len(sens)} sensitive values")
    if edges.size and (edges.min() < 0 or edges.max() >= n):
        raise ValueError(f"{where}: edges point outside the node range [0, {n}): min {edges.min()}, max {edges.max()}")
    _binary_column(sens, f"{where}: sens", allow_unknown=True)
    _binary_column(y, f"{where}: labels", allow_unknown=True)
    ei = torch.as_tensor(edges, dtype=torch.long).t().contiguous()
    ei, _ = remove_self_loops(ei)
    ei = coalesce(to_undirected(ei, num_nodes=n), num_nodes=n)
    data = Data(
        x=torch.as_tensor(np.asarray(x, dtype=np.float32)),
        edge_index=ei,
        y=torch.as_tensor(y, dtype=torch.long),
        sens=torch.as_tensor(sens, dtype=torch.long),
    )
    if adjacency is not None:
        data.adj_edge_index = torch.as_tensor(adjacency[0], dtype=torch.long)
        data.adj_edge_weight = torch.as_tensor(adjacency[1], dtype=torch.float32)
    for name, idx in zip(("train", "val", "test"), splits, strict=True):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.as_tensor(idx, dtype=torch.long)] = True
        data[f"{name}_mask"] = mask
        if name == "test":
            s = data.sens[mask]
            for g in (0, 1):
                if not bool((s == g).any()):
                    raise ValueError(f"{where}: the test split holds no node of sensitive group {g}")
    return data


# ---------------------------------------------------------------------------------------------------- datasets


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FairGraphDataset(InMemoryDataset):
    """Base class: raw files live directly in ``root``; the processed graph is cached in ``processed_dir``.

    Args:
        root: folder holding the raw files (the standard names, see ``raw_file_names``).
        split_seed: seed of the split rule; ``None`` = the protocol's (reliant: German 0, others 20; pygdebias 20).
        processed_dir: where to cache the processed graph; default ``<root>/processed`` when ``root`` is writable
            (and has write permission bits), else ``$XDG_CACHE_HOME/polyzoo/graph/<name>-<hash of root>``.
        transform: PyG transform applied on access.
        force_reload: re-process even when a matching cache exists.
        protocol: ``"reliant"`` (default) or ``"pygdebias"`` (see the module docstring).
        label_number: training-label budget of the split rule; ``None`` = the protocol's.
    """

    name: ClassVar[str] = ""
    files: ClassVar[tuple[str, ...]] = ()
    optional_files: ClassVar[tuple[str, ...]] = ()
    source: ClassVar[str] = "the PyGDebias data repository (github.com/PyGDebias-Team/data)"
    seeds: ClassVar[dict[str, int]] = {"reliant": 20, "pygdebias": 20}
    label_numbers: ClassVar[dict[str, int | None]] = {"reliant": 100, "pygdebias": 100}

    def __init__(
        self,
        root: str | os.PathLike,
        split_seed: int | None = None,
        processed_dir: str | os.PathLike | None = None,
        transform: Callable | None = None,
        force_reload: bool = False,
        protocol: str = DEFAULT_PROTOCOL,
        label_number: int | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
        self.protocol = protocol
        self.split_seed = int(self.seeds[protocol] if split_seed is None else split_seed)
        self.label_number = self.label_numbers[protocol] if label_number is None else int(label_number)
        root = Path(root).expanduser().resolve()
        if processed_dir is None:
            processed_dir = root / "processed"
            # a folder without write bits counts as read-only even for root (os.access says writable there)
            if not os.access(root, os.W_OK) or not (root.stat().st_mode & 0o222):
                cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                tag = hashlib.sha1(str(root).encode()).hexdigest()[:10]
                processed_dir = cache / "polyzoo" / "graph" / f"{self.name}-{tag}"
        self._processed_dir = str(Path(processed_dir))
        super().__init__(str(root), transform=transform, force_reload=force_reload, log=False)
        self._data = self._read_cache(Path(self.processed_paths[0]))
        self.slices = None

    @property
    def raw_dir(self) -> str:
        return self.root

    @property
    def processed_dir(self) -> str:
        return self._processed_dir

    @property
    def raw_file_names(self) -> list[str]:
        return list(self.files)

    @property
    def processed_file_names(self) -> list[str]:
        return [f"{self.name}_{self._variant()}_v{CACHE_VERSION}.npz"]

    def settings(self) -> dict[str, Any]:
        """Everything besides the raw files that determines the processed graph."""
        return {
            "dataset": self.name,
            "protocol": self.protocol,
            "split_seed": self.split_seed,
            "label_number": self.label_number,
            "cache_version": CACHE_VERSION,
        }

    def _variant(self) -> str:
        ln = "all" if self.label_number is None else str(self.label_number)
        return f"{self.protocol}_seed{self.split_seed}_ln{ln}"

    def download(self) -> None:
        missing = [f for f in self.files if not (Path(self.root) / f).is_file()]
        raise FileNotFoundError(
            f"{type(self).__name__}: missing raw file(s) {missing} in {self.root}. Put "
            f"{', '.join(self.files)} from {self.source} directly into that folder (polyzoo downloads nothing)."
        )

    def process(self) -> None:  # called by our _process only
        self._build(Path(self.processed_paths[0]), self._record())

    # --- cache: npz without pickle, rebuilt when the raw files or the settings change -----------------------

    def _record(self) -> dict[str, Any]:
        root = Path(self.root)
        raw = {}
        for f in (*self.files, *self.optional_files):
            path = root / f
            if path.is_file():
                raw[f] = {"size": path.stat().st_size, "sha256": _sha256(path)}
        return {"settings": self.settings(), "raw": raw}

    def _process(self) -> None:
        """Replaces PyG's ``Dataset._process``, which unpickles ``pre_transform.pt`` / ``pre_filter.pt`` with
        ``weights_only=False``: build the npz cache unless one with the same record exists."""
        path = Path(self.processed_paths[0])
        record = self._record()
        if not self.force_reload and path.is_file():
            try:
                if self._cache_meta(path) == record:
                    return
                log.info("%s: processed cache is stale (raw files or settings changed); rebuilding", path)
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
                log.warning("%s: unreadable processed cache (%s); rebuilding", path, e)
        self._build(path, record)

    def _build(self, path: Path, record: dict[str, Any]) -> None:
        data = self.read_raw(Path(self.root))
        arrays = {k: v.numpy() for k, v in data.to_dict().items() if isinstance(v, torch.Tensor)}
        arrays["__meta__"] = np.array(json.dumps(record, sort_keys=True))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; outputs follow the user's umask
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def _cache_meta(path: Path) -> dict[str, Any]:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["__meta__"]))

    def _read_cache(self, path: Path) -> Data:
        with np.load(path, allow_pickle=False) as z:
            return Data(**{k: torch.from_numpy(z[k].copy()) for k in z.files if k != "__meta__"})

    def read_raw(self, root: Path) -> Data:  # pragma: no cover - abstract
        raise NotImplementedError

    def _csv(self, root: Path, fname: str, needed: Sequence[str]) -> pd.DataFrame:
        path = root / fname
        df = pd.read_csv(path)
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {list(df.columns)[:12]}...")
        return df


class _IndexedCsvDataset(FairGraphDataset):
    """German/Credit/Bail: node i is CSV row i; edges are row indices; per-class split."""

    sens_attr: ClassVar[str] = ""
    predict_attr: ClassVar[str] = ""
    drop: ClassVar[tuple[str, ...]] = ()

    def sens_values(self, df: pd.DataFrame, where: str) -> np.ndarray:
        return _binary_column(df[self.sens_attr].to_numpy(), where)

    def features(self, df: pd.DataFrame, header: list[str], where: str) -> np.ndarray:
        """Feature matrix under the protocol (pygdebias: every column scaled to [−1, 1])."""
        return _feature_norm(self._matrix(df, header, where))

    @staticmethod
    def _matrix(df: pd.DataFrame, header: list[str], where: str) -> np.ndarray:
        try:
            return df[header].to_numpy(dtype=np.float32)
        except ValueError as e:
            raise ValueError(f"{where}: non-numeric feature column ({e})") from None

    def split(self, labels: np.ndarray, root: Path) -> tuple[np.ndarray, ...]:
        return split_per_class(labels, self.split_seed, self.label_number)

    def adjacency(self, edges: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.protocol == "reliant":
            return official_adjacency(edges, n, identities=2, row_normalize=True)
        return official_adjacency(edges, n, identities=1, row_normalize=False)

    def read_table(self, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Features, labels, sensitive values and the edge list of the raw CSV + edge files (one reader for
        every protocol; the protocols differ in what they do with them)."""
        csv, edges_file = self.files
        df = self._csv(root, csv, [self.sens_attr, self.predict_attr, *self.drop])
        sens = self.sens_values(df, f"{root / csv}: column {self.sens_attr}")
        df = df.copy()
        df[self.sens_attr] = sens
        header = [c for c in df.columns if c != self.predict_attr and c not in self.drop]
        x = self.features(df, header, str(root / csv))
        labels = df[self.predict_attr].to_numpy().astype(np.int64)
        labels[labels == -1] = 0
        _binary_column(labels, f"{root / csv}: column {self.predict_attr}")
        edges = read_edge_list(root / edges_file, num_nodes=len(df))
        return x, labels, sens, edges

    def read_raw(self, root: Path) -> Data:
        x, labels, sens, edges = self.read_table(root)
        adjacency = self.adjacency(edges, len(labels))
        splits = self.split(labels, root)
        return build_data(x, edges, labels, sens, splits, where=str(root / self.files[0]), adjacency=adjacency)


class German(_IndexedCsvDataset):
    """German credit graph (1,000 clients; sensitive Gender, label GoodCustomer).

    reliant (RELIANT ``load_german``): only LoanAmount, Age, LoanDuration scaled to [−1, 1]; seed 0; label_number
    1000. pygdebias: all feature columns scaled; seed 20; label_number 100.
    """

    name = "german"
    files = ("german.csv", "german_edges.txt")
    sens_attr, predict_attr = "Gender", "GoodCustomer"
    drop = ("OtherLoansAtStore", "PurposeOfLoan")
    scaled: ClassVar[tuple[str, ...]] = ("LoanAmount", "Age", "LoanDuration")
    seeds: ClassVar[dict[str, int]] = {"reliant": 0, "pygdebias": 20}
    label_numbers: ClassVar[dict[str, int | None]] = {"reliant": 1000, "pygdebias": 100}

    def sens_values(self, df: pd.DataFrame, where: str) -> np.ndarray:
        col = df[self.sens_attr]
        if col.dtype == object:
            unknown = sorted(set(col.astype(str)) - {"Female", "Male"})
            if unknown:
                raise ValueError(f"{where}: expected 'Female'/'Male', found also {unknown[:10]}")
            return (col == "Female").to_numpy().astype(np.int64)
        return _binary_column(col.to_numpy(), where)

    def features(self, df: pd.DataFrame, header: list[str], where: str) -> np.ndarray:
        if self.protocol == "reliant":
            return self._matrix(_scale_columns(df, self.scaled, where), header, where)
        return super().features(df, header, where)


class Credit(_IndexedCsvDataset):
    """Credit defaulter graph (30,000 clients; sensitive Age, label NoDefaultNextMonth).

    reliant (RELIANT's npz path, ``make_dataset.get_dataset`` + ``get_train_val_test_split``): binary features
    (non-zero → 1), largest connected component of the unweighted undirected graph without self-loops, seed 20,
    label_number 1000, adjacency ``D⁻¹(A + I)``. pygdebias: features scaled to [−1, 1], seed 20, label_number 6000.
    """

    name = "credit"
    files = ("credit.csv", "credit_edges.txt")
    sens_attr, predict_attr = "Age", "NoDefaultNextMonth"
    drop = ("Single",)
    label_numbers: ClassVar[dict[str, int | None]] = {"reliant": 1000, "pygdebias": 6000}

    def features(self, df: pd.DataFrame, header: list[str], where: str) -> np.ndarray:
        if self.protocol == "reliant":
            return (self._matrix(df, header, where) != 0).astype(np.float32)
        return super().features(df, header, where)

    def read_raw(self, root: Path) -> Data:
        if self.protocol != "reliant":
            return super().read_raw(root)
        x, labels, sens, edges = self.read_table(root)
        n, csv = len(labels), self.files[0]
        # standardize(): unweighted, undirected, no self-loops, largest connected component (original order)
        a = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
        _, comp = connected_components(a + a.T, directed=False)
        keep = np.nonzero(comp == np.bincount(comp).argmax())[0]
        remap = np.full(n, -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        e = remap[edges]
        e = e[(e >= 0).all(axis=1)]
        x, labels, sens = x[keep], labels[keep], sens[keep]
        adjacency = official_adjacency(e, len(keep), identities=1, row_normalize=True, binarize=True)
        splits = self.split(labels, root)
        data = build_data(x, e, labels, sens, splits, where=str(root / csv), adjacency=adjacency)
        data.node_id = torch.as_tensor(keep, dtype=torch.long)  # row of credit.csv
        return data


class Bail(_IndexedCsvDataset):
    """Recidivism / bail graph (18,876 defendants; sensitive WHITE, label RECID). PyGDebias calls it ``Bail``.

    reliant (RELIANT ``load_bail``): row-normalised features; split from ``root/split/*.npy`` if present, else per
    class 30 / 20 / 50 % with seed 20. pygdebias: features scaled to [−1, 1]; seed 20; label_number 100.
    """

    name = "bail"
    files = ("bail.csv", "bail_edges.txt")
    optional_files = ("split/train_split.npy", "split/val_split.npy", "split/test_split.npy")
    sens_attr, predict_attr = "WHITE", "RECID"
    label_numbers: ClassVar[dict[str, int | None]] = {"reliant": None, "pygdebias": 100}

    def features(self, df: pd.DataFrame, header: list[str], where: str) -> np.ndarray:
        if self.protocol == "reliant":
            return _row_normalize(self._matrix(df, header, where))
        return super().features(df, header, where)

    def split(self, labels: np.ndarray, root: Path) -> tuple[np.ndarray, ...]:
        if self.protocol == "reliant":
            files = _split_files(root, len(labels))
            if files is not None:
                return files
            return split_per_class(labels, self.split_seed, self.label_number, bounds=(0.3, 0.5))
        return super().split(labels, root)


class _UserIdCsvDataset(FairGraphDataset):
    """NBA/Pokec: rows keyed by ``user_id``; edges are user-id pairs; sens appended as the last feature."""

    sens_attr: ClassVar[str] = ""
    predict_attr: ClassVar[str] = ""
    test_is_rest: ClassVar[bool] = False
    normalize: ClassVar[bool] = False  # min-max scale the feature columns to [−1, 1] (not the appended sens)

    def __init__(self, root: str | os.PathLike, split: str = "official", **kwargs) -> None:
        if split not in ("official", "disjoint"):
            raise ValueError(f"split: expected 'official' or 'disjoint', got {split!r}")
        self.split = split
        super().__init__(root, **kwargs)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "split": self.split, "normalize": self.normalize}

    def _variant(self) -> str:
        return f"{super()._variant()}_{self.split}" + ("_norm" if self.normalize else "")

    def read_raw(self, root: Path) -> Data:
        csv, edges_file = self.files
        df = self._csv(root, csv, ["user_id", self.sens_attr, self.predict_attr])
        header = [c for c in df.columns if c not in ("user_id", self.sens_attr, self.predict_attr)]
        try:
            feats = df[header].to_numpy(dtype=np.float32)
        except ValueError as e:
            raise ValueError(f"{root / csv}: non-numeric feature column ({e})") from None
        sens = _binary_column(df[self.sens_attr].to_numpy(), f"{root / csv}: column {self.sens_attr}", True)
        labels = df[self.predict_attr].to_numpy().astype(np.int64)
        ids = df["user_id"].to_numpy().astype(np.int64)
        if len(set(ids.tolist())) != len(ids):
            raise ValueError(f"{root / csv}: user_id values are not unique")
        id_map = {int(u): i for i, u in enumerate(ids)}
        edges = read_edge_list(root / edges_file, id_map=id_map)
        test_is_rest = self.test_is_rest and self.split == "official"
        assert self.label_number is not None
        splits = split_labelled(labels, sens, self.split_seed, self.label_number, test_is_rest)
        labels = np.where(labels > 1, 1, labels)
        if self.normalize:
            feats = _feature_norm(feats)
        x = np.concatenate([feats, sens[:, None].astype(np.float32)], axis=1)
        # FairGNN's load_pokec adds one identity; RELIANT's normalize_adj a second one and row-normalises
        if self.protocol == "reliant":
            adjacency = official_adjacency(edges, len(df), identities=2, row_normalize=True)
        else:
            adjacency = official_adjacency(edges, len(df), identities=1, row_normalize=False)
        return build_data(x, edges, labels, sens, splits, where=str(root / csv), adjacency=adjacency)


class NBA(_UserIdCsvDataset):
    """NBA players (403; sensitive country, label SALARY with −1 unknown).

    The features (raw statistics up to ~220) are min-max scaled to [−1, 1], as FairGNN's training scripts do for NBA
    (``if dataset == 'nba': features = feature_norm(features)``); PyGDebias' ``Nba`` leaves them raw. Unscaled,
    an MLP student starts saturated and RELIANT's polynomial surrogate drives it to one class. Both protocols use
    this split (RELIANT has no NBA loader); they differ only in the adjacency values.
    """

    name = "nba"
    files = ("nba.csv", "nba_relationship.txt")
    sens_attr, predict_attr = "country", "SALARY"
    test_is_rest = True
    normalize = True


class PokecZ(_UserIdCsvDataset):
    """Pokec-z (sensitive region, label I_am_working_in_field)."""

    name = "pokec_z"
    files = ("region_job.csv", "region_job_relationship.txt")
    sens_attr, predict_attr = "region", "I_am_working_in_field"
    label_numbers: ClassVar[dict[str, int | None]] = {"reliant": 500, "pygdebias": 500}


class PokecN(PokecZ):
    """Pokec-n (sensitive region, label I_am_working_in_field)."""

    name = "pokec_n"
    files = ("region_job_2.csv", "region_job_2_relationship.txt")


class AMinerS(FairGraphDataset):
    """AMiner-S (PyGDebias ``LCC_small``, RELIANT "DBLP"): binarised as in RELIANT ``load_aminer``.

    reliant: raw features; pygdebias: sens appended as a last column. Split from ``root/split/*.npy`` if present,
    else per class 50 / 25 / 25 % with seed 20 (both protocols).
    """

    name = "aminer_s"
    tag: ClassVar[str] = "Small"
    files = ("edgelist_Small.txt", "labels_Small.txt", "sens_Small.txt", "X_Small.npz")
    optional_files = ("split/train_split.npy", "split/val_split.npy", "split/test_split.npy")
    label_numbers: ClassVar[dict[str, int | None]] = {"reliant": None, "pygdebias": None}

    def read_raw(self, root: Path) -> Data:
        edges_f, labels_f, sens_f, x_f = self.files
        labels_raw = _read_id_value(root / labels_f)
        n = len(labels_raw)
        sens_raw = _read_id_value(root / sens_f, n)
        with np.load(root / x_f, allow_pickle=False) as z:
            missing = [k for k in ("data", "row", "col") if k not in z.files]
            if missing:
                raise ValueError(f"{root / x_f}: missing arrays {missing}; expected COO 'data', 'row', 'col'")
            data, row, col = z["data"], z["row"].astype(np.int64), z["col"].astype(np.int64)
        if len(row) and (row.min() < 0 or row.max() >= n):
            raise ValueError(f"{root / x_f}: feature rows outside [0, {n})")
        x = np.zeros((n, int(col.max()) + 1 if len(col) else 0), dtype=np.float32)
        np.add.at(x, (row, col), data.astype(np.float32))
        sens = (sens_raw == 2).astype(np.int64)
        labels = (labels_raw == 3).astype(np.int64)
        edges = read_edge_list(root / edges_f, num_nodes=n)
        splits = _split_files(root, n) or split_per_class(labels, self.split_seed, self.label_number)
        if self.protocol == "reliant":
            adjacency = official_adjacency(edges, n, identities=2, row_normalize=True)
        else:
            x = np.concatenate([x, sens[:, None].astype(np.float32)], axis=1)
            adjacency = official_adjacency(edges, n, identities=1, row_normalize=False)
        return build_data(x, edges, labels, sens, splits, where=str(root), adjacency=adjacency)


class AMinerL(AMinerS):
    """AMiner-L (PyGDebias ``LCC``, RELIANT "DBLP-L")."""

    name = "aminer_l"
    tag = "LCC"
    files = ("edgelist_LCC.txt", "labels_LCC.txt", "sens_LCC.txt", "X_LCC.npz")


DATASETS: dict[str, type[FairGraphDataset]] = {
    "german": German,
    "credit": Credit,
    "bail": Bail,
    "recidivism": Bail,
    "nba": NBA,
    "pokec_z": PokecZ,
    "pokec_n": PokecN,
    "aminer_s": AMinerS,
    "aminer_l": AMinerL,
}


def load_dataset(name: str, root: str | os.PathLike, **kwargs) -> Data:
    """The single graph of dataset ``name`` (a key of ``DATASETS``) read from ``root``."""
    key = name.lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[key](root, **kwargs)[0]
