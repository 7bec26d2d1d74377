"""Make ``spconv`` 2.3.8 (the PyPI CPU build) train on machines without CUDA.

spconv's autograd functions ask ``spconv.pytorch.cppcore.get_current_stream()`` for the CUDA stream, which calls
``torch.cuda.current_stream()`` and raises when torch has no CUDA device. The forward pass rarely reaches it; the
backward pass always does. :func:`patch_spconv_cpu` replaces that function (in ``cppcore`` and in the modules that
imported it by name: ``ops``, ``hash``) with one that returns stream 0 (spconv's "no stream") when CUDA is
unavailable and the real stream otherwise. It is explicit, idempotent, changes no installed file, and runs when
the CMT plugin is imported (``polyzoo.detection.cmt``). ``tests/test_spconv_cpu.py`` checks forward and backward.
"""

from __future__ import annotations

import importlib
import logging

import torch

logger = logging.getLogger(__name__)

_MODULES = ("spconv.pytorch.cppcore", "spconv.pytorch.ops", "spconv.pytorch.hash")


def _current_stream_or_zero() -> int:
    if torch.cuda.is_available():
        return torch.cuda.current_stream().cuda_stream
    return 0


def patch_spconv_cpu() -> bool:
    """Patch spconv's stream lookup. Returns True when spconv is installed (patched now or before)."""
    try:
        modules = [importlib.import_module(name) for name in _MODULES]
    except ImportError:
        logger.info("spconv is not installed; mmdet3d's SparseEncoder falls back to mmcv's CUDA-only sparse conv")
        return False
    for module in modules:
        if getattr(module, "get_current_stream", None) is not _current_stream_or_zero:
            module.get_current_stream = _current_stream_or_zero
    return True
