"""FTRL-Proximal and group-lasso FTRL against hand-computed updates, including exact zeroing."""

import math

import pytest
import torch

from polyzoo.recsys.optim import FTRL, GroupFTRL, tf_ftrl_kwargs, zero_row_mask, zero_weight_ratio


def _step(opt, p, grad):
    p.grad = grad
    opt.step()


def test_ftrl_hand_computed_two_steps():
    a, b, l1, l2 = 0.5, 1.0, 0.3, 0.2
    p = torch.nn.Parameter(torch.tensor([0.1, -0.2], dtype=torch.float64))
    opt = FTRL([p], alpha=a, beta=b, l1=l1, l2=l2)
    _step(opt, p, torch.tensor([1.0, 0.1], dtype=torch.float64))
    # step 1: n = g², σ = |g|/α, z = g − σ w
    n = [1.0, 0.01]
    z = [1.0 - (1.0 / a) * 0.1, 0.1 - (0.1 / a) * (-0.2)]
    w = [-(z[0] - l1) / ((b + math.sqrt(n[0])) / a + l2), 0.0]  # |z[1]| = 0.14 ≤ λ1 -> exactly 0
    assert p[1].item() == 0.0
    torch.testing.assert_close(p.detach(), torch.tensor(w, dtype=torch.float64))
    _step(opt, p, torch.tensor([-2.0, 0.5], dtype=torch.float64))
    g = [-2.0, 0.5]
    for i in range(2):
        sigma = (math.sqrt(n[i] + g[i] ** 2) - math.sqrt(n[i])) / a
        z[i] += g[i] - sigma * w[i]
        n[i] += g[i] ** 2
    w = [
        0.0 if abs(zi) <= l1 else -(zi - math.copysign(l1, zi)) / ((b + math.sqrt(ni)) / a + l2)
        for zi, ni in zip(z, n, strict=True)
    ]
    torch.testing.assert_close(p.detach(), torch.tensor(w, dtype=torch.float64))
    torch.testing.assert_close(opt.state[p]["z"], torch.tensor(z, dtype=torch.float64))


def test_ftrl_without_regularisation_is_adagrad_like_closed_form():
    """λ1 = λ2 = β = 0: w = −α z / √n."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = FTRL([p], alpha=0.1, beta=0.0, l1=0.0, l2=0.0)
    for _ in range(3):
        _step(opt, p, torch.randn(5, dtype=torch.float64))
        st = opt.state[p]
        torch.testing.assert_close(p.detach(), -0.1 * st["z"] / st["n"].sqrt())


def test_tf_kwargs():
    kw = tf_ftrl_kwargs(0.02, 0.1, 0.1)
    assert kw == {"alpha": 0.02, "beta": 0.0, "l1": 0.1, "l2": 0.2, "initial_accumulator": 0.1}
    p = torch.nn.Parameter(torch.zeros(3))
    opt = FTRL([p], **kw)
    _step(opt, p, torch.zeros(3))
    torch.testing.assert_close(opt.state[p]["n"], torch.full((3,), 0.1))


def test_group_ftrl_hand_computed_and_exact_zero_rows():
    a, b, l1, l2 = 0.5, 1.0, 0.4, 0.1
    d = 4
    w0 = torch.tensor([[0.1, 0.2, -0.1, 0.0], [0.3, -0.3, 0.2, 0.1], [0.05, 0.0, 0.0, 0.02]], dtype=torch.float64)
    p = torch.nn.Parameter(w0.clone())
    g = torch.tensor([[2.0, -1.0, 0.5, 1.5], [0.1, 0.1, -0.1, 0.05], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    opt = GroupFTRL([p], alpha=a, beta=b, l1=l1, l2=l2)
    _step(opt, p, g)
    n = g**2
    z = g - (n.sqrt() / a) * w0
    thr = l1 * math.sqrt(d)
    for r in range(3):
        norm = z[r].norm().item()
        if norm <= thr:
            expect = torch.zeros(d, dtype=torch.float64)
        else:
            expect = z[r] * (thr / norm - 1) / ((b + n[r].sqrt()) / a + l2)
        torch.testing.assert_close(p[r].detach(), expect)
    assert z[0].norm() > thr and z[1].norm() <= thr  # row 1 is dropped although its gradient is non-zero
    assert zero_row_mask(p.detach()).tolist() == [False, True, True]
    assert p[0].abs().sum() > 0


def test_group_ftrl_boundary_is_inclusive():
    """‖z‖ == λ1√D exactly -> zero row (official ``less_equal``)."""
    p = torch.nn.Parameter(torch.zeros(1, 4, dtype=torch.float64))
    opt = GroupFTRL([p], alpha=1.0, beta=1.0, l1=0.5, l2=0.0)
    _step(opt, p, torch.full((1, 4), 0.5, dtype=torch.float64))  # ‖z‖ = 1 = 0.5·√4
    assert torch.all(p == 0)
    p2 = torch.nn.Parameter(torch.zeros(1, 4, dtype=torch.float64))
    opt2 = GroupFTRL([p2], alpha=1.0, beta=1.0, l1=0.49, l2=0.0)
    _step(opt2, p2, torch.full((1, 4), 0.5, dtype=torch.float64))
    assert torch.all(p2 != 0)


@pytest.mark.parametrize("cls", [GroupFTRL, FTRL])
def test_sparse_gradient_equals_dense_on_touched_rows(cls):
    torch.manual_seed(0)
    emb_s = torch.nn.Embedding(10, 4, sparse=True).double()
    emb_d = torch.nn.Embedding(10, 4, sparse=False).double()
    emb_d.load_state_dict(emb_s.state_dict())
    initial = emb_s.weight.detach().clone()
    kw = {"alpha": 0.3, "beta": 1.0, "l1": 0.05, "l2": 0.1}
    opt_s, opt_d = cls(emb_s.parameters(), **kw), cls(emb_d.parameters(), **kw)
    ids = torch.tensor([[1, 3, 3], [3, 7, 1]])  # duplicates are summed
    target = torch.randn(2, 3, 4, dtype=torch.float64)
    for emb, opt in ((emb_s, opt_s), (emb_d, opt_d)):
        ((emb(ids) - target) ** 2).sum().backward()
        assert emb.weight.grad.is_sparse == (emb is emb_s)
        opt.step()
    touched = torch.tensor([1, 3, 7])
    torch.testing.assert_close(emb_s.weight[touched], emb_d.weight[touched])
    untouched = torch.tensor([0, 2, 4, 5, 6, 8, 9])
    if cls is FTRL:  # FTRL's sparse update is lazy (as TF's sparse FTRL kernel)
        torch.testing.assert_close(emb_s.weight[untouched], initial[untouched])
    else:  # GroupFTRL: the official _apply_sparse re-solves every row, so unseen rows (z = 0) become 0
        torch.testing.assert_close(emb_s.weight, emb_d.weight)
        assert bool((emb_s.weight[untouched] == 0).all())


# --- GFTRL's sparse path against an independent transcription of the official GFTRL (xdeepint/src/optimizer.py):
# ``_apply_sparse`` = ``_apply_dense`` on the densified gradient, i.e. every step re-solves every row.


def _official_gftrl_step(w, n, z, g, alpha, beta, lam1, lam2):
    """One official GFTRL step on the whole table (numpy float64; g dense with zero rows outside the batch)."""
    import numpy as np

    d = w.shape[1]
    g2 = g * g
    sigma = (np.sqrt(n + g2) - np.sqrt(n)) / alpha
    n = n + g2
    z = z + g - sigma * w
    znorm = np.tile(np.sqrt((z * z).sum(axis=1, keepdims=True)), (1, d))
    thr = lam1 * np.sqrt(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        upd = z * ((thr / znorm - 1) / ((beta + np.sqrt(n)) / alpha + lam2))
    w = np.where(znorm <= thr, np.zeros_like(w), upd)
    return w, n, z


@pytest.mark.parametrize("unseen_rows", ["zero", "keep"])
def test_group_ftrl_sparse_equals_official_dense_with_late_rows(unseen_rows):
    """Default: equal to the official dense re-solve at every step; the lazy option must differ at step 0."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows, dim = 12, 4
    hp = {"alpha": 0.5, "beta": 1.0, "l1": 0.02, "l2": 0.1}
    w0 = rng.normal(size=(rows, dim))
    # batches of row ids (duplicates summed); rows 9, 10 appear only at step 2/3, row 11 never
    batches = [np.array([0, 1, 1, 2, 3]), np.array([4, 5, 0, 9]), np.array([10, 2, 6, 7, 8])]
    grads = [rng.normal(size=(len(b), dim)) * 3.0 for b in batches]

    emb = torch.nn.Parameter(torch.tensor(w0))
    opt = GroupFTRL([emb], **hp, unseen_rows=unseen_rows)
    w, n, z = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for step, (ids, gvals) in enumerate(zip(batches, grads, strict=True)):
        emb.grad = torch.sparse_coo_tensor(torch.tensor(ids)[None], torch.tensor(gvals), (rows, dim))
        opt.step()
        dense_g = np.zeros_like(w0)
        np.add.at(dense_g, ids, gvals)
        w, n, z = _official_gftrl_step(w, n, z, dense_g, hp["alpha"], hp["beta"], hp["l1"], hp["l2"])
        if unseen_rows == "keep":
            assert not np.allclose(emb.detach().numpy(), w)  # rows 4..11 keep their random values
            return
        np.testing.assert_allclose(emb.detach().numpy(), w, rtol=0, atol=1e-12, err_msg=f"step {step}")
        np.testing.assert_allclose(opt.state[emb]["z"].numpy(), z, rtol=0, atol=1e-12)
        if step == 0:  # rows without state yet are zeroed at the first step
            assert (emb.detach()[[4, 5, 6, 7, 8, 9, 10, 11]] == 0).all()
    assert (emb.detach()[11] == 0).all() and bool((emb.detach()[10] != 0).any())


def test_group_ftrl_sparse_lazy_option_keeps_unseen_rows():
    torch.manual_seed(0)
    emb = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
    initial = emb.detach().clone()
    opt = GroupFTRL([emb], alpha=0.5, beta=1.0, l1=0.01, l2=0.1, unseen_rows="keep")
    emb.grad = torch.sparse_coo_tensor(torch.tensor([[1, 2]]), torch.ones(2, 4, dtype=torch.float64), (6, 4))
    opt.step()
    torch.testing.assert_close(emb.detach()[[0, 3, 4, 5]], initial[[0, 3, 4, 5]])
    with pytest.raises(ValueError, match="unseen_rows"):
        GroupFTRL([emb], unseen_rows="lazy")


def test_zero_weight_ratio():
    assert zero_weight_ratio([torch.tensor([0.0, 1.0]), torch.tensor([[0.0, 0.0]])]) == 0.75


def test_invalid_hyperparameters():
    with pytest.raises(ValueError, match="alpha"):
        FTRL([torch.nn.Parameter(torch.zeros(1))], alpha=0.0)
    with pytest.raises(ValueError, match="2-D"):
        p = torch.nn.Parameter(torch.zeros(3))
        opt = GroupFTRL([p])
        _step(opt, p, torch.ones(3))
