"""Helpers shared by the checkpoint filters: unwrap training-script containers and strip wrapper prefixes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["strip_prefixes"]

_CONTAINER_KEYS = ("state_dict", "model", "net", "state_dict_ema", "model_ema")


def strip_prefixes(state_dict: Mapping[str, Any], prefixes: tuple[str, ...] = ("module.",)) -> dict[str, Any]:
    """Return a plain ``{name: tensor}`` dict: a checkpoint saved as ``{"state_dict": {...}}`` (or ``model``,
    ``net``, ...) is unwrapped, and leading ``prefixes`` (DataParallel's ``module.``) are removed from every key.
    """
    sd: Mapping[str, Any] = state_dict
    for key in _CONTAINER_KEYS:
        inner = sd.get(key) if isinstance(sd, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            sd = inner
            break
    out = {}
    for k, v in sd.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out
