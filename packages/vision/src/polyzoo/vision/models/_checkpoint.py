"""Helpers shared by the checkpoint filters: unwrap training-script containers and strip wrapper prefixes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["resolve_official_cfg", "strip_prefixes"]

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


def resolve_official_cfg(variant: str, kwargs: Mapping[str, Any], release: str) -> dict[str, Any]:
    """The pretrained config that ``pretrained=True`` will load from (timm's resolution of ``pretrained_cfg`` and
    ``pretrained_cfg_overlay`` in ``kwargs``). polyzoo's configs carry no URL, so without a ``file`` (or
    ``state_dict``) in the overlay this raises a ``ValueError`` naming the official ``release`` to fetch."""
    from timm.models import resolve_pretrained_cfg

    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get("pretrained_cfg"),
        pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"),
    ).to_dict()
    if not (cfg.get("file") or cfg.get("state_dict") or cfg.get("url") or cfg.get("hf_hub_id")):
        raise ValueError(
            f"{variant}: polyzoo downloads no weights; get the official {release} and pass "
            "pretrained_cfg_overlay=dict(file=PATH)"
        )
    return cfg
