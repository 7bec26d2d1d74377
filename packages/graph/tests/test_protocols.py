"""Dataset protocols against independent transcriptions of the official loaders, and the processed cache's safety.

Transcribed from ``yushundong/RELIANT`` ``src/CPF-master/data/utils.py`` (``load_german``, ``load_bail``,
``normalize``, ``normalize_adj``), ``src/GraphAKD/.../data/make_dataset.py`` (``get_train_val_test_split`` for
credit) and PyGDebias ``pygdebias/datasets/datasets.py`` (``load_pokec`` with ``test_idx=True``).
"""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from polyzoo.graph.datasets import NBA, AMinerS, Bail, Credit, German

# ---------------------------------------------------------------------------------------------- transcriptions


def reliant_row_normalize(mx):
    """RELIANT ``normalize``: D⁻¹ M (rows summing to 0 stay 0)."""
    rowsum = np.array(mx.sum(1))
    r_inv = np.power(rowsum, -1.0).flatten()
    r_inv[np.isinf(r_inv)] = 0.0
    return sp.diags(r_inv).dot(mx)


def official_adj(edges, n, loader_eye=True, normalize_adj=True):
    """The loaders' symmetrised adjacency (+ I in the loader), then ``normalize_adj`` (+ I, row-normalised)."""
    adj = sp.coo_matrix((np.ones(edges.shape[0]), (edges[:, 0], edges[:, 1])), shape=(n, n), dtype=np.float32)
    adj = adj + adj.T.multiply(adj < adj.T) - adj.multiply(adj < adj.T)  # max(M, Mᵀ)
    if loader_eye:
        adj = adj + sp.eye(n)
    if normalize_adj:
        adj = reliant_row_normalize(adj + sp.eye(n))
    return np.asarray(sp.csr_matrix(adj).todense(), dtype=np.float32)


def dense_adj(g):
    out = torch.zeros(g.num_nodes, g.num_nodes)
    out[g.adj_edge_index[0], g.adj_edge_index[1]] = g.adj_edge_weight
    return out.numpy()


def per_class_split(labels, seed, lo, hi, label_number=None):
    """``random.seed(seed)``; shuffle class 0 then class 1 (numpy arrays); train [:min(lo·n, label_number // 2)]."""
    random.seed(seed)
    l0, l1 = np.where(labels == 0)[0], np.where(labels == 1)[0]
    random.shuffle(l0)
    random.shuffle(l1)

    def cap(a):
        return int(lo * len(a)) if label_number is None else min(int(lo * len(a)), label_number // 2)

    train = np.append(l0[: cap(l0)], l1[: cap(l1)])
    val = np.append(l0[int(lo * len(l0)) : int(hi * len(l0))], l1[int(lo * len(l1)) : int(hi * len(l1))])
    test = np.append(l0[int(hi * len(l0)) :], l1[int(hi * len(l1)) :])
    return train, val, test


def reliant_load_german(path):
    """RELIANT ``load_german`` (features, labels, split, sens) on german.csv."""
    df = pd.read_csv(path)
    header = list(df.columns)
    for c in ("GoodCustomer", "OtherLoansAtStore", "PurposeOfLoan"):
        header.remove(c)
    df["Gender"] = np.where(df["Gender"] == "Female", 1, 0)
    for c in ("LoanAmount", "Age", "LoanDuration"):
        df[c] = 2 * (df[c] - df[c].min()).div(df[c].max() - df[c].min()) - 1
    features = np.asarray(sp.csr_matrix(df[header], dtype=np.float32).todense())
    labels = df["GoodCustomer"].values.copy()
    labels[labels == -1] = 0
    train, val, test = per_class_split(labels, 0, 0.5, 0.75, label_number=1000)
    return features, labels, (train, val, test), df["Gender"].values.astype(int)


def mask(idx, n):
    m = torch.zeros(n, dtype=torch.bool)
    m[torch.as_tensor(np.asarray(idx, dtype=np.int64))] = True
    return m


# ------------------------------------------------------------------------------------------------ real German


def test_reliant_german_real(shared_graphs, tmp_path):
    root = shared_graphs / "german"
    g = German(root, processed_dir=tmp_path)[0]  # the default protocol is RELIANT's
    x, labels, splits, sens = reliant_load_german(root / "german.csv")
    sizes = tuple(int(g[f"{k}_mask"].sum()) for k in ("train", "val", "test"))
    assert sizes == (500, 250, 250)  # label_number 1000: per class min(50 %, 500) -> 150 + 350
    for name, idx in zip(("train", "val", "test"), splits, strict=True):
        assert torch.equal(g[f"{name}_mask"], mask(idx, 1000)), name
    np.testing.assert_allclose(g.x.numpy(), x, rtol=0, atol=1e-6)
    assert g.y.tolist() == labels.tolist() and g.sens.tolist() == sens.tolist()
    header = [c for c in pd.read_csv(root / "german.csv").columns if c not in ("GoodCustomer",)]
    header = [c for c in header if c not in ("OtherLoansAtStore", "PurposeOfLoan")]
    for c in ("LoanAmount", "Age", "LoanDuration"):  # the three scaled columns span [-1, 1]
        col = g.x[:, header.index(c)]
        assert float(col.min()) == -1.0 and float(col.max()) == 1.0
    assert float(g.x[:, header.index("YearsAtCurrentHome")].max()) == 4.0  # the others stay raw
    edges = np.genfromtxt(root / "german_edges.txt").astype("int")
    np.testing.assert_allclose(dense_adj(g), official_adj(edges, 1000), rtol=1e-6, atol=1e-7)
    # the PyGDebias protocol on the same files: seed 20, 100 training labels, all columns scaled, A + I
    p = German(root, processed_dir=tmp_path, protocol="pygdebias")[0]
    assert int(p.train_mask.sum()) == 100 and not torch.equal(p.test_mask, g.test_mask)
    assert float(p.x.abs().max()) == 1.0 and float(p.x[:, header.index("YearsAtCurrentHome")].max()) == 1.0
    np.testing.assert_array_equal(dense_adj(p), official_adj(edges, 1000, normalize_adj=False))


# -------------------------------------------------------------------------------------------- small raw files


def _write_bail(root, n=40, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(
        {
            "WHITE": np.arange(n) % 2,
            "RECID": (np.arange(n) // 2) % 2,
            "AGE": rng.integers(18, 70, n),
            "PRIORS": rng.integers(0, 6, n),
        }
    )
    df.loc[5, ["WHITE", "AGE", "PRIORS"]] = 0  # a zero row: row-normalisation leaves it 0
    df.to_csv(root / "bail.csv", index=False)
    edges = np.stack([np.arange(n), (np.arange(n) + 1) % n], 1)
    np.savetxt(root / "bail_edges.txt", np.r_[edges, edges[:3]].astype(float))  # 3 duplicated rows
    return df, edges


def test_reliant_bail_row_normalised_and_30_20_50(tmp_path):
    df, _ = _write_bail(tmp_path / "bail")
    g = Bail(tmp_path / "bail")[0]
    header = [c for c in df.columns if c != "RECID"]
    expected_x = np.asarray(reliant_row_normalize(sp.csr_matrix(df[header], dtype=np.float32)).todense())
    np.testing.assert_allclose(g.x.numpy(), expected_x, rtol=1e-6)
    assert float(g.x[5].abs().sum()) == 0.0
    splits = per_class_split(df["RECID"].values, 20, 0.3, 0.5)
    for name, idx in zip(("train", "val", "test"), splits, strict=True):
        assert torch.equal(g[f"{name}_mask"], mask(idx, 40)), name
    all_edges = np.genfromtxt(tmp_path / "bail" / "bail_edges.txt").astype("int")
    np.testing.assert_allclose(dense_adj(g), official_adj(all_edges, 40), rtol=1e-6)
    # shipped split files take precedence (read without pickle)
    (tmp_path / "bail" / "split").mkdir()
    for k, idx in zip(("train", "val", "test"), (np.arange(0, 10), np.arange(10, 20), np.arange(20, 40)), strict=True):
        np.save(tmp_path / "bail" / "split" / f"{k}_split.npy", idx)
    g2 = Bail(tmp_path / "bail")[0]  # the cache records the split files, so this rebuilds
    assert torch.equal(g2.train_mask, mask(np.arange(10), 40)) and int(g2.test_mask.sum()) == 20


def test_reliant_credit_lcc_binary_features(tmp_path):
    root = tmp_path / "credit"
    root.mkdir()
    n = 30
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "Age": np.arange(n) % 2,
            "NoDefaultNextMonth": (np.arange(n) // 3) % 2,
            "Single": 1,
            "Limit": rng.integers(0, 3, n) * 1000,
            "Pay": rng.integers(-2, 2, n),
        }
    )
    df.to_csv(root / "credit.csv", index=False)
    big = np.stack([np.arange(25), (np.arange(25) + 1) % 25], 1)  # nodes 0..24 one component
    small = np.array([[25, 26], [27, 28], [28, 28]])  # small components and a self-loop; node 29 isolated
    np.savetxt(root / "credit_edges.txt", np.r_[big, small], fmt="%d")
    g = Credit(root)[0]
    keep = np.arange(25)
    assert g.num_nodes == 25 and g.node_id.tolist() == keep.tolist()
    header = ["Age", "Limit", "Pay"]
    np.testing.assert_array_equal(g.x.numpy(), (df[header].to_numpy()[keep] != 0).astype(np.float32))
    labels = df["NoDefaultNextMonth"].to_numpy()[keep]
    splits = per_class_split(labels, 20, 0.5, 0.75, label_number=1000)
    for name, idx in zip(("train", "val", "test"), splits, strict=True):
        assert torch.equal(g[f"{name}_mask"], mask(idx, 25)), name
    a = sp.coo_matrix((np.ones(len(big)), (big[:, 0], big[:, 1])), shape=(25, 25))
    a = ((a + a.T) != 0).astype(np.float64)
    expected = np.asarray(reliant_row_normalize(a + sp.eye(25)).todense(), dtype=np.float32)  # D⁻¹(A + I)
    np.testing.assert_allclose(dense_adj(g), expected, rtol=1e-6)


def _write_nba(root):
    root.mkdir()
    n = 30
    ids = np.arange(n) + 1000
    salary = np.r_[np.arange(24) % 2, [-1] * 6]
    country = np.arange(n) % 2
    country[[3, 7, 11, 14, 18, 22]] = -1  # labelled players with unknown sens
    df = pd.DataFrame({"user_id": ids, "SALARY": salary, "country": country, "AGE": np.arange(n) + 20})
    df.to_csv(root / "nba.csv", index=False)
    np.savetxt(root / "nba_relationship.txt", np.stack([ids, np.roll(ids, 1)], 1), fmt="%d")
    return df


def test_nba_val_is_the_unfiltered_rest(tmp_path):
    """FairGNN ``load_pokec(test_idx=True)``: idx_val = idx_test *before* idx_test loses the unknown-sens nodes."""
    df = _write_nba(tmp_path / "nba")
    g = NBA(tmp_path / "nba", label_number=10)[0]
    labels, sens = df["SALARY"].values, df["country"].values
    random.seed(20)
    label_idx = np.where(labels >= 0)[0]
    random.shuffle(label_idx)
    train = label_idx[: min(int(0.5 * len(label_idx)), 10)]
    idx_test = label_idx[10:]
    idx_val = idx_test
    idx_test = np.asarray(list(set(np.where(sens >= 0)[0]) & set(idx_test)))
    assert torch.equal(g.train_mask, mask(train, 30))
    assert torch.equal(g.val_mask, mask(idx_val, 30))
    assert torch.equal(g.test_mask, mask(idx_test, 30))
    assert bool((g.sens[g.val_mask] == -1).any()) and not bool((g.sens[g.test_mask] == -1).any())
    # RELIANT's adjacency preprocessing on FairGNN's graph (loader + I, normalize_adj + I) vs PyGDebias' A + I
    e = np.stack([np.arange(30), np.roll(np.arange(30), 1)], 1)
    np.testing.assert_allclose(dense_adj(g), official_adj(e, 30), rtol=1e-6)
    p = NBA(tmp_path / "nba", label_number=10, protocol="pygdebias")[0]
    np.testing.assert_array_equal(dense_adj(p), official_adj(e, 30, normalize_adj=False))
    assert torch.equal(p.val_mask, g.val_mask)


def test_aminer_protocols_feature_columns(tmp_path):
    root = tmp_path / "aminer_s"
    root.mkdir()
    n = 20
    np.savetxt(root / "labels_Small.txt", np.stack([np.arange(n), np.where(np.arange(n) % 3 == 0, 3, 1)], 1), fmt="%d")
    np.savetxt(root / "sens_Small.txt", np.stack([np.arange(n), np.where(np.arange(n) % 2 == 0, 2, 0)], 1), fmt="%d")
    np.savetxt(root / "edgelist_Small.txt", np.stack([np.arange(n), (np.arange(n) + 2) % n], 1), fmt="%d")
    np.savez(root / "X_Small.npz", data=np.ones(n), row=np.arange(n), col=np.arange(n) % 4)
    assert AMinerS(root)[0].x.shape == (n, 4)  # RELIANT load_aminer: the raw features only
    assert AMinerS(root, protocol="pygdebias")[0].x.shape == (n, 5)  # PyGDebias appends sens


def test_unknown_protocol(tmp_path):
    with pytest.raises(ValueError, match="protocol"):
        German(tmp_path, protocol="nifty")


# ------------------------------------------------------------------------------------------- processed cache


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_processed_cache_never_unpickles(tmp_path):
    _write_bail(tmp_path / "bail")
    processed = tmp_path / "processed"
    processed.mkdir()
    marker = tmp_path / "PWNED"
    first = Bail(tmp_path / "bail", processed_dir=processed)
    cache = processed / first.processed_file_names[0]
    x = first[0].x.clone()
    payload = pickle.dumps(_Payload(marker))
    # a pickle at the cache path itself, at PyG's pre_transform/pre_filter files and at the old .pt cache name
    for name in (cache.name, "pre_transform.pt", "pre_filter.pt", "bail_seed20_v1.pt"):
        (processed / name).write_bytes(payload)
    again = Bail(tmp_path / "bail", processed_dir=processed)[0]
    assert not marker.exists()
    assert torch.equal(again.x, x)
    assert cache.read_bytes()[:2] == b"PK"  # rebuilt as npz
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: unpickling it would have created the marker
    assert marker.exists()


def test_cache_is_rebuilt_when_raw_files_or_settings_change(tmp_path):
    _write_bail(tmp_path / "bail")
    root = tmp_path / "bail"
    g = Bail(root)[0]
    cache = root / "processed" / Bail(root).processed_file_names[0]
    stamp = cache.stat().st_mtime_ns
    assert Bail(root)[0].edge_index.shape == g.edge_index.shape and cache.stat().st_mtime_ns == stamp  # reused
    size = (root / "bail_edges.txt").stat().st_size
    with open(root / "bail_edges.txt", "a") as f:
        f.write("0 20\n")
    g2 = Bail(root)[0]
    assert g2.edge_index.shape[1] == g.edge_index.shape[1] + 2 and (root / "bail_edges.txt").stat().st_size > size
    # same size and mtime, different content: still detected (content hash)
    text = (root / "bail_edges.txt").read_text().replace("0 20\n", "0 21\n")
    st = os.stat(root / "bail_edges.txt")
    (root / "bail_edges.txt").write_text(text)
    os.utime(root / "bail_edges.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    g3 = Bail(root)[0]
    assert (g3.edge_index == 21).any() and not (g3.edge_index[:, g3.edge_index[0] == 0] == 20).any()
    # another protocol / seed is another cache entry with other contents
    assert int(Bail(root, protocol="pygdebias")[0].train_mask.sum()) != int(g3.train_mask.sum())


def test_library_default_protocol_equals_cli_default():
    import inspect

    from polyzoo.graph.cli import teacher
    from polyzoo.graph.datasets import DEFAULT_PROTOCOL, FairGraphDataset

    assert DEFAULT_PROTOCOL == "reliant"
    assert inspect.signature(FairGraphDataset.__init__).parameters["protocol"].default == DEFAULT_PROTOCOL
    option = next(p for p in teacher.params if p.name == "protocol")
    assert option.default == DEFAULT_PROTOCOL
    assert next(p for p in teacher.params if p.name == "split_seed").default is None
