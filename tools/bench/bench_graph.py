"""RELIANT at scale: epoch time and peak memory of teacher training and distillation on a biased SBM graph with
≥ 1M undirected edges (2M directed), full-batch and mini-batch, and RELIANT's overhead over vanilla KD.

Contenders (one epoch each, Adam, 2 classes, hidden 32, 2 layers; timed interleaved in one process):
- teacher GCN, full batch (forward + backward + step);
- vanilla KD into an MLP / a GCN student, full batch (Euclidean KD on the non-training nodes);
- RELIANT-SP into the same students, full batch (student step with the surrogate + proxy step);
- teacher GCN and vanilla KD / RELIANT-SP into a GCN student through PyG's NeighborLoader (fan-out [10, 5]): the timed
  unit is ``BATCHES`` mini-batches of ``BATCH`` seeds (training nodes for the teacher, all nodes for the students);
  the table also extrapolates to one pass over those seeds.

Threads: ``POLYZOO_BENCH_THREADS`` (default 1). On the shared 2-core machine, two OpenMP threads under heavy load
made PyG's scatter/gather kernels about 10× slower than one thread, so one is the default; the header says which.

Mini-batch: PyG's ``NeighborLoader`` (``polyzoo.graph.sampling.neighbor_loader``). Its compiled sampling kernels
(pyg-lib or torch-sparse) do not install from PyPI for torch 2.13, so unless one of them is installed the loader
samples with ``polyzoo.graph.sampling.TorchNeighborSampler`` (plain torch); the header says which backend ran.

Peak memory: each contender runs once more in a fresh subprocess (this file run as a script, with glibc's default
malloc so freed memory goes back to the system); after the graph, models and samplers are built, a thread samples the
resident set size every 2 ms during one epoch; the table gives the peak minus the RSS before the epoch.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time

import torch

from polyzoo.graph.kd import euclidean_kd_loss
from polyzoo.graph.models import build_model
from polyzoo.graph.reliant import BiasProxy, Reliant
from polyzoo.graph.sampling import native_sampling_available, neighbor_loader
from polyzoo.graph.synthetic import BiasedSBMConfig, biased_sbm
from polyzoo.shared.timing import time_interleaved

HIDDEN = 32
ALPHA = 1000.0
BATCH = 2048
BATCHES = 4


def _graph(quick: bool):
    n, deg = (20_000, 20.0) if quick else (100_000, 21.0)
    return biased_sbm(BiasedSBMConfig(num_nodes=n, avg_degree=deg, num_features=16, seed=0))


def _contenders(data, quick: bool) -> dict:
    torch.manual_seed(0)
    n, f = data.num_nodes, data.num_features
    teacher = build_model("gcn", f, HIDDEN, 2, 2, 0.5)
    t_opt = torch.optim.Adam(teacher.parameters(), lr=0.01)
    with torch.no_grad():
        teacher.eval()
        t_prob = teacher(data.x, data.edge_index).softmax(-1)
    train = data.train_mask
    kd_mask = ~train
    fair_mask = train & (data.sens >= 0)
    gen = torch.Generator().manual_seed(0)
    loader_args = dict(batch_size=BATCH, shuffle=True, generator=gen)
    train_sampler = neighbor_loader(data, [10, 5], input_nodes=train.nonzero().view(-1), **loader_args)
    all_sampler = neighbor_loader(data, [10, 5], **loader_args)

    def first(NeighborLoader):
        for i, b in enumerate(NeighborLoader):
            if i == BATCHES:
                return
            yield b

    def teacher_full():
        teacher.train()
        t_opt.zero_grad()
        out = teacher(data.x, data.edge_index)
        torch.nn.functional.cross_entropy(out[train], data.y[train]).backward()
        t_opt.step()

    def teacher_mini():
        teacher.train()
        for b in first(train_sampler):
            t_opt.zero_grad()
            out = teacher(b.x, b.edge_index)[: b.batch_size]
            torch.nn.functional.cross_entropy(out, b.y[: b.batch_size]).backward()
            t_opt.step()

    def student_setup(kind: str, fair: str):
        proxy = BiasProxy(n, "random" if fair != "none" else "none", generator=torch.Generator().manual_seed(1))
        student = build_model(kind, f + proxy.width, HIDDEN, 2, 2, 0.5)
        opt = torch.optim.Adam(student.parameters(), lr=0.01)
        popt = torch.optim.Adam(proxy.parameters(), lr=0.01) if proxy.learnable else None
        return student, opt, Reliant(fair, ALPHA, proxy, "node", popt)

    def distill_full(kind: str, fair: str):
        student, opt, rel = student_setup(kind, fair)

        def kd(logits):
            return euclidean_kd_loss(logits[kd_mask], t_prob[kd_mask])

        def epoch():
            rel.student_step(student, opt, data.x, data.edge_index, kd, data.sens, data.y, fair_mask)
            rel.proxy_step(student, data.x, data.edge_index, data.sens, data.y, fair_mask)

        return epoch

    def distill_mini(fair: str):
        student, opt, rel = student_setup("gcn", fair)

        def epoch():
            for b in first(all_sampler):
                seeds = b.n_id[: b.batch_size]
                seed_mask = torch.zeros(len(b.n_id), dtype=torch.bool)
                seed_mask[: b.batch_size] = True
                kd_m = seed_mask.clone()
                kd_m[: b.batch_size] = kd_mask[seeds]
                fm = seed_mask.clone()
                fm[: b.batch_size] = fair_mask[seeds]
                tp = t_prob[b.n_id]
                x, s, y = b.x, b.sens, b.y

                def kd(logits, kd_m=kd_m, tp=tp):
                    return euclidean_kd_loss(logits[kd_m], tp[kd_m], reduction="mean")

                if fair != "none" and (int((s[fm] == 0).sum()) == 0 or int((s[fm] == 1).sum()) == 0):
                    continue
                rel.student_step(student, opt, x, b.edge_index, kd, s, y, fm, node_ids=b.n_id)
                rel.proxy_step(student, x, b.edge_index, s, y, fm, node_ids=b.n_id)

        return epoch

    return {
        "teacher GCN (full)": teacher_full,
        "KD → MLP (full)": distill_full("mlp", "none"),
        "RELIANT-SP → MLP (full)": distill_full("mlp", "sp"),
        "KD → GCN (full)": distill_full("gcn", "none"),
        "RELIANT-SP → GCN (full)": distill_full("gcn", "sp"),
        "teacher GCN (NeighborLoader)": teacher_mini,
        "KD → GCN (NeighborLoader)": distill_mini("none"),
        "RELIANT-SP → GCN (NeighborLoader)": distill_mini("sp"),
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _measure_memory(name: str, quick: bool) -> float:
    """Peak RSS increase (MB) during one epoch of contender ``name`` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    cmd = [sys.executable, __file__, "--memory", name, "--quick" if quick else "--full"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mb"])


def _neighbor_loader_status() -> str:
    backend = "pyg-lib/torch-sparse" if native_sampling_available() else "plain torch (TorchNeighborSampler)"
    return f"mini-batches: PyG NeighborLoader, sampling backend: {backend}"


def run(quick: bool = False) -> str:
    before = torch.get_num_threads()
    threads = int(os.environ.get("POLYZOO_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    try:
        return _run(quick, threads)
    finally:
        torch.set_num_threads(before)


def _run(quick: bool, threads: int) -> str:
    data = _graph(quick)
    contenders = _contenders(data, quick)
    repeats, warmup = (1, 1) if quick else (2, 0)
    times = time_interleaved(contenders, repeats=repeats, warmup=warmup)
    mem = {name: _measure_memory(name, quick) for name in contenders}
    e = data.edge_index.shape[1]
    lines = [
        f"graph: biased SBM, {data.num_nodes:,} nodes, {e // 2:,} undirected edges ({e:,} directed), "
        f"{data.num_features} features; hidden {HIDDEN}; torch threads {threads}",
        _neighbor_loader_status(),
        "",
        f"NeighborLoader rows: {BATCHES} batches of {BATCH} seeds, fan-out [10, 5]; 'epoch' extrapolates to all seeds",
        "",
        "| contender | time (s) | epoch (s) | ratio vs anchor | peak memory during it (MB) |",
        "|---|---|---|---|---|",
    ]
    anchors = {
        "RELIANT-SP → MLP (full)": "KD → MLP (full)",
        "RELIANT-SP → GCN (full)": "KD → GCN (full)",
        "RELIANT-SP → GCN (NeighborLoader)": "KD → GCN (NeighborLoader)",
        "KD → GCN (full)": "teacher GCN (full)",
        "KD → GCN (NeighborLoader)": "teacher GCN (NeighborLoader)",
    }
    n_train = int(data.train_mask.sum())
    for name, t in times.items():
        ratio = f"{t / times[anchors[name]]:.2f}× {anchors[name]}" if name in anchors else "anchor"
        if "NeighborLoader" in name:
            seeds = n_train if name.startswith("teacher") else data.num_nodes
            epoch = t / BATCHES * -(-seeds // BATCH)
        else:
            epoch = t
        lines.append(f"| {name} | {t:.3f} | {epoch:.2f} | {ratio} | {mem[name]:.0f} |")
    return "\n".join(lines)


def _memory_main(name: str, quick: bool) -> None:
    torch.set_num_threads(int(os.environ.get("POLYZOO_BENCH_THREADS", "1")))
    fn = _contenders(_graph(quick), quick)[name]
    before, peak, stop = _rss_mb(), [0.0], threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    fn()
    stop.set()
    thread.join()
    peak[0] = max(peak[0], _rss_mb())
    sys.stdout.write(json.dumps({"peak_mb": peak[0] - before}) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--memory":
        _memory_main(sys.argv[2], sys.argv[3] == "--quick")
    else:
        sys.stdout.write(run(quick="--quick" in sys.argv) + "\n")
