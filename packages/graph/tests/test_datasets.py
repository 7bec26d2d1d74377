"""Dataset loaders: the real German/NBA graphs (skipped when ../shared/data is absent), the other formats on small
files written here, the official split rules, and clear errors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from polyzoo.graph.datasets import NBA, AMinerL, AMinerS, Bail, Credit, German, PokecN, PokecZ, load_dataset


def official_per_class_split(labels: np.ndarray, label_number: int, seed: int = 20):
    """The NIFTY/PyGDebias rule, written as the official code writes it (global random, numpy arrays)."""
    random.seed(seed)
    l0, l1 = np.where(labels == 0)[0], np.where(labels == 1)[0]
    random.shuffle(l0)
    random.shuffle(l1)
    train = np.append(
        l0[: min(int(0.5 * len(l0)), label_number // 2)], l1[: min(int(0.5 * len(l1)), label_number // 2)]
    )
    val = np.append(l0[int(0.5 * len(l0)) : int(0.75 * len(l0))], l1[int(0.5 * len(l1)) : int(0.75 * len(l1))])
    test = np.append(l0[int(0.75 * len(l0)) :], l1[int(0.75 * len(l1)) :])
    return train, val, test


def _mask_of(idx, n):
    m = torch.zeros(n, dtype=torch.bool)
    m[torch.as_tensor(np.asarray(idx, dtype=np.int64))] = True
    return m


# ------------------------------------------------------------------------------------------------ real data


def test_german_real(shared_graphs, tmp_path):
    root = shared_graphs / "german"
    g = German(root, processed_dir=tmp_path, protocol="pygdebias")[0]
    df = pd.read_csv(root / "german.csv")
    assert g.num_nodes == 1000 and g.x.shape == (1000, 27)
    assert g.sens.tolist() == (df["Gender"] == "Female").astype(int).tolist()
    assert int(g.sens.sum()) == 310
    labels = np.where(df["GoodCustomer"].to_numpy() == -1, 0, 1)
    assert g.y.tolist() == labels.tolist()
    train, val, test = official_per_class_split(labels, 100)
    for name, idx in (("train", train), ("val", val), ("test", test)):
        assert torch.equal(g[f"{name}_mask"], _mask_of(idx, 1000)), name
    assert (int(g.train_mask.sum()), int(g.val_mask.sum()), int(g.test_mask.sum())) == (100, 250, 250)
    assert float(g.x.min()) == -1.0 and float(g.x.max()) == 1.0
    raw = np.loadtxt(root / "german_edges.txt").astype(int)
    raw = raw[raw[:, 0] != raw[:, 1]]
    expected = {(a, b) for a, b in raw} | {(b, a) for a, b in raw}
    assert set(map(tuple, g.edge_index.t().tolist())) == expected
    # a second load reads the processed cache
    assert torch.equal(German(root, processed_dir=tmp_path, protocol="pygdebias")[0].x, g.x)


def test_nba_real(shared_graphs, tmp_path):
    root = shared_graphs / "nba"
    g = NBA(root, processed_dir=tmp_path)[0]
    df = pd.read_csv(root / "nba.csv")
    assert g.num_nodes == 403 and g.x.shape == (403, 96)
    assert torch.equal(g.x[:, -1], g.sens.float())  # sens appended last, as PyGDebias
    # the other columns min-max scaled to [-1, 1] per column, as FairGNN's NBA scripts do
    raw = df.drop(columns=["user_id", "country", "SALARY"]).to_numpy(dtype=np.float64)
    span = raw.max(0) - raw.min(0)
    expect = np.where(span > 0, 2 * (raw - raw.min(0)) / np.where(span > 0, span, 1) - 1, 0)
    np.testing.assert_allclose(g.x[:, :-1].numpy(), expect, atol=1e-5)
    labels = df["SALARY"].to_numpy()
    random.seed(20)
    label_idx = np.where(labels >= 0)[0]
    random.shuffle(label_idx)
    train = label_idx[: min(int(0.5 * len(label_idx)), 100)]
    test = sorted(set(np.where(df["country"].to_numpy() >= 0)[0]) & set(label_idx[100:]))
    assert torch.equal(g.train_mask, _mask_of(train, 403))
    assert torch.equal(g.test_mask, _mask_of(test, 403))
    assert torch.equal(g.val_mask, g.test_mask)  # official test_idx=True
    assert int(g.train_mask.sum()) == 100 and int(g.test_mask.sum()) == 213
    assert int((g.y == -1).sum()) == 90
    disjoint = NBA(root, split="disjoint", processed_dir=tmp_path)[0]
    assert not bool((disjoint.val_mask & disjoint.test_mask).any())


# ------------------------------------------------------------------------------------------ formats, tiny files


def _write_indexed(root: Path, name: str, sens_col: str, label_col: str, extra: list[str], n: int = 40, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame({label_col: rng.integers(0, 2, n), sens_col: np.arange(n) % 2, "f1": rng.normal(size=n)})
    for c in extra:
        df[c] = rng.integers(0, 3, n)
    df["f2"] = rng.integers(0, 5, n)
    df.to_csv(root / f"{name}.csv", index=False)
    edges = np.stack([np.arange(n), (np.arange(n) + 1) % n], 1)
    np.savetxt(root / f"{name}_edges.txt", edges.astype(float))
    return df


@pytest.mark.parametrize(
    ("cls", "sens", "label", "extra", "label_number"),
    [(Credit, "Age", "NoDefaultNextMonth", ["Single"], 6000), (Bail, "WHITE", "RECID", [], 100)],
)
def test_indexed_formats(tmp_path, cls, sens, label, extra, label_number):
    df = _write_indexed(tmp_path / cls.name, cls.name, sens, label, extra)
    g = cls(tmp_path / cls.name, protocol="pygdebias")[0]
    assert g.x.shape == (40, 3)  # f1, f2 and the sensitive column; the label and dropped columns are gone
    assert g.sens.tolist() == df[sens].tolist()
    train, _, test = official_per_class_split(df[label].to_numpy(), label_number)
    assert torch.equal(g.train_mask, _mask_of(train, 40))
    assert torch.equal(g.test_mask, _mask_of(test, 40))
    assert g.edge_index.shape == (2, 80)
    assert (Path(tmp_path / cls.name / "processed")).is_dir()


def test_pokec_formats(tmp_path):
    rng = np.random.default_rng(0)
    for cls in (PokecZ, PokecN):
        root = tmp_path / cls.name
        root.mkdir()
        n = 60
        ids = np.arange(n) * 7919 + 10**10  # large ids, as Pokec user ids
        df = pd.DataFrame(
            {
                "user_id": ids,
                "region": np.arange(n) % 2,
                "I_am_working_in_field": np.r_[rng.integers(-1, 4, n - 4), [0, 1, 0, 1]],
                "age": rng.integers(18, 60, n),
            }
        )
        csv, rel = cls.files
        df.to_csv(root / csv, index=False)
        np.savetxt(root / rel, np.stack([ids, np.roll(ids, 1)], 1), fmt="%d")
        g = cls(root)[0]
        assert g.x.shape == (n, 2)
        assert set(g.y.unique().tolist()) <= {-1, 0, 1}  # labels > 1 mapped to 1
        assert not bool((g.val_mask & g.test_mask).any())
        labelled = int((torch.as_tensor(df["I_am_working_in_field"].to_numpy()) >= 0).sum())
        assert int(g.train_mask.sum()) == min(int(0.5 * labelled), 500)


def test_aminer_format(tmp_path):
    for cls, tag in ((AMinerS, "Small"), (AMinerL, "LCC")):
        root = tmp_path / cls.name
        root.mkdir()
        n = 50
        ids = np.random.default_rng(1).permutation(n)  # files need not be in id order
        labels = np.where(np.arange(n) % 3 == 0, 3, 1)
        sens = np.where(np.arange(n) % 2 == 0, 2, 0)
        np.savetxt(root / f"labels_{tag}.txt", np.stack([ids, labels[ids]], 1), fmt="%d", delimiter="\t")
        np.savetxt(root / f"sens_{tag}.txt", np.stack([ids, sens[ids]], 1), fmt="%d", delimiter="\t")
        np.savetxt(
            root / f"edgelist_{tag}.txt", np.stack([np.arange(n), (np.arange(n) + 3) % n], 1), fmt="%d", delimiter="\t"
        )
        rows, cols = np.arange(n), np.arange(n) % 4
        np.savez(root / f"X_{tag}.npz", data=np.ones(n), row=rows, col=cols)
        g = cls(root, protocol="pygdebias")[0]
        assert g.y.tolist() == (labels == 3).astype(int).tolist()
        assert g.sens.tolist() == (sens == 2).astype(int).tolist()
        assert g.x.shape == (n, 5) and torch.equal(g.x[:, :4].argmax(1), torch.as_tensor(cols))
        assert int(g.train_mask.sum()) == int(0.5 * 17) + int(0.5 * 33)


# ------------------------------------------------------------------------------------------------- bad input


def test_missing_files_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"german_edges.txt.*directly into that folder"):
        (tmp_path / "g").mkdir()
        pd.DataFrame({"a": [1]}).to_csv(tmp_path / "g" / "german.csv")
        German(tmp_path / "g")


def test_edges_outside_node_range(tmp_path):
    root = tmp_path / "bail"
    _write_indexed(root, "bail", "WHITE", "RECID", [])
    with open(root / "bail_edges.txt", "a") as f:
        f.write("3 40\n")
    with pytest.raises(ValueError, match=r"bail_edges.txt: edge 41 \(3 40\) points outside the node range \[0, 40\)"):
        Bail(root)


def test_unknown_user_id_in_edges(tmp_path):
    root = tmp_path / "nba"
    root.mkdir()
    pd.DataFrame({"user_id": [5, 6, 7, 8], "SALARY": [0, 1, 0, 1], "country": [0, 1, 0, 1], "f": [1, 2, 3, 4]}).to_csv(
        root / "nba.csv", index=False
    )
    (root / "nba_relationship.txt").write_text("5 6\n6 99\n")
    with pytest.raises(ValueError, match="id 99 is not a node id"):
        NBA(root)


def test_non_binary_sensitive_attribute(tmp_path):
    root = tmp_path / "credit"
    df = _write_indexed(root, "credit", "Age", "NoDefaultNextMonth", ["Single"])
    df.loc[3, "Age"] = 2
    df.to_csv(root / "credit.csv", index=False)
    with pytest.raises(ValueError, match=r"credit.csv: column Age.*binary.*\[2.0\]"):
        Credit(root)


def test_empty_group_in_test_split(tmp_path):
    root = tmp_path / "bail"
    df = _write_indexed(root, "bail", "WHITE", "RECID", [])
    df["WHITE"] = 0
    df.to_csv(root / "bail.csv", index=False)
    with pytest.raises(ValueError, match="test split holds no node of sensitive group 1"):
        Bail(root)


def test_load_dataset_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cora", tmp_path)
