"""Counting multiply-accumulates (MACs, the "FLOPs" of the ECA-Net, EMO and SoT papers).

:func:`count_macs` runs one forward pass under :class:`torch.utils.flop_counter.FlopCounterMode`, which counts
2 FLOPs per multiply-accumulate of convolutions, matrix products (``mm``, ``addmm``, ``bmm``, ``matmul``)
and scaled-dot-product attention (the CPU flash kernel is added here, torch registers only the GPU ones), and
halves that. Element-wise operations (activations, softmax, additions, pooling) are not counted.

Options, to match the counters the papers used:
- ``norms=True`` adds normalisation layers the way fvcore does (EMO's counter): BatchNorm in eval mode 2 per
  input element (1 without affine), LayerNorm 5 per element (4 without affine). EMO-1M: 0.2552 G without,
  0.2608 G with (paper 0.2608 G).
- ``attention=False`` leaves out fused attention kernels: thop (ECA-Net's and SoT's counter) only sees
  modules, so the two matrix products inside attention are not in SoT's published numbers.

:func:`count_macs_of` builds a registered model under :class:`~torch._subclasses.fake_tensor.FakeTensorMode`
(no memory, no initialisation cost), so even SoT-Base is counted in about a second.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = ["count_macs", "count_macs_of", "count_params"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _cpu_sdpa(query_shape: Any, key_shape: Any, value_shape: Any, *_: Any, out_shape: Any = None, **__: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _zero(*_: Any, **__: Any) -> int:
    return 0


_ATTENTION_OPS = (
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu,
    torch.ops.aten._scaled_dot_product_flash_attention,
    torch.ops.aten._scaled_dot_product_efficient_attention,
    torch.ops.aten._scaled_dot_product_cudnn_attention,
)


def count_macs(
    model: nn.Module, input_size: tuple[int, ...] = (1, 3, 224, 224), norms: bool = False, attention: bool = True
) -> int:
    """MACs per sample of one eval-mode forward pass of ``model`` on a zero input of ``input_size`` (B, C, H, W).

    Args:
        model: the network (real or built under ``FakeTensorMode``; its train/eval mode is restored).
        input_size: input shape, batch first.
        norms: also count BatchNorm/LayerNorm element operations as fvcore does.
        attention: count fused attention kernels (False: thop's module-only convention).
    """
    mapping: dict[Any, Any] = {op: _zero for op in _ATTENTION_OPS[1:]} if not attention else {}
    mapping[_ATTENTION_OPS[0]] = _cpu_sdpa if attention else _zero
    was_training = model.training
    model.eval()
    norm_ops = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        nonlocal norm_ops
        affine = getattr(mod, "weight", None) is not None
        per_element = (2 if affine else 1) if isinstance(mod, nn.modules.batchnorm._BatchNorm) else (5 if affine else 4)
        norm_ops += inputs[0].numel() * per_element

    handles = []
    if norms:
        norm_types = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)
        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, norm_types)]
    param = next(model.parameters())
    try:
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
            if isinstance(param, FakeTensor):
                with param.fake_mode:
                    model(torch.zeros(input_size, device=param.device))
            else:
                model(torch.zeros(input_size, device=param.device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return (counter.get_total_flops() // 2 + norm_ops) // input_size[0]


def count_macs_of(
    name: str,
    input_size: tuple[int, ...] = (1, 3, 224, 224),
    norms: bool = False,
    attention: bool = True,
    **model_kwargs: Any,
) -> tuple[int, int]:
    """(parameters, MACs per sample) of the timm model ``name`` built with ``model_kwargs`` under fake tensors."""
    import timm

    with FakeTensorMode(allow_non_fake_inputs=True):
        model = timm.create_model(name, **model_kwargs)
        return count_params(model), count_macs(model, input_size, norms=norms, attention=attention)
