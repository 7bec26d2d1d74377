"""One process group for the loops that are not Accelerate's ``Trainer``: where this process computes, which share
of the work it owns, and the few collectives those loops need.

With ``WORLD_SIZE`` > 1 (``torchrun``, ``accelerate launch``) Accelerate's ``PartialState`` joins the process group:
gloo on the CPU, NCCL on CUDA with one GPU per local rank (an explicit ``cuda:N`` is then ignored). With one
process nothing is initialised and every collective is the identity. Used by graph (RELIANT's two-step loop, which
DDP's reducer refuses), security (dataset distillation: the synthetic images are the parameters) and recsys
(sparse embedding gradients, which NCCL cannot all-reduce).
"""

from __future__ import annotations

import os

import torch
from torch import nn

__all__ = ["ProcessGroup"]


class ProcessGroup:
    """This process's ``device``, ``rank`` and ``world`` (the number of processes)."""

    def __init__(self, device: str = "cpu"):
        from polyzoo.shared.options import resolve_device

        name = resolve_device(device)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world > 1:
            from accelerate import PartialState

            state = PartialState(cpu=name == "cpu")
            self.device, self.rank, self.world = state.device, state.process_index, state.num_processes
        else:
            if name.startswith("cuda:"):
                torch.cuda.set_device(int(name.split(":")[1]))
            self.device, self.rank = torch.device(name), 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, item: int) -> bool:
        """Whether work item ``item`` is this process's (round robin)."""
        return item % self.world == self.rank

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes, in place (``t`` itself with one process)."""
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Differentiable sum over processes whose backward is the identity: each process back-propagates its own
        share, and :meth:`reduce_grads` adds the shares."""
        return _SumOverProcesses.apply(t) if self.world > 1 else t

    def reduce_grads(self, params: list[nn.Parameter]) -> None:
        """Sum the parameters' gradients over processes in one flattened all-reduce (a missing gradient counts as
        zeros and becomes a zero gradient)."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch.distributed.all_reduce(flat)
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def gather_rows(self, mine: torch.Tensor, n: int) -> torch.Tensor:
        """Rows of items ``rank, rank + P, …`` (round robin, :meth:`owns`) from every process, reassembled into
        the (n, …) array."""
        if self.world == 1:
            return mine
        per = -(-n // self.world)
        pad = mine.new_zeros((per, *mine.shape[1:]))
        pad[: mine.shape[0]] = mine
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        torch.distributed.all_gather(parts, pad)
        return torch.stack(parts, dim=1).reshape(per * self.world, *mine.shape[1:])[:n]


class _SumOverProcesses(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad
