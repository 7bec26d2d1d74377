"""Load official CMT checkpoints (junjie18/CMT, mmdet3d 1.0 / mmcv 1.x key names) into the polyzoo plugin.

Official code: https://github.com/junjie18/CMT (``CmtDetector`` → ``CmtHead`` with ``CmtTransformer`` /
``PETRTransformerDecoder`` built from mmcv 1.x transformer bricks, ``VoVNet``, ``CPFPN``; the LiDAR branch is
mmdet3d's ``SparseEncoder`` / ``SECOND`` / ``SECONDFPN`` and the R50 configs use mmdet's ``ResNet``).

Use it from a config or from ``tools/test.py`` with the ``cmt-official://`` prefix (an mmengine checkpoint scheme
registered when :mod:`polyzoo.detection.cmt.mmdet3d_plugin` is imported, which every CMT config does; ``tools/test.py``
converts such an argument once through :func:`resolve_official_args`)::

    load_from = "cmt-official://ckpts/cmt_voxel0075_vov_1600x640_epoch20.pth"
    uv run python tools/test.py packages/detection/configs/cmt/cmt_voxel0075_vov_1600x640_cbgs.py \\
        cmt-official://ckpts/cmt_voxel0075_vov_1600x640_epoch20.pth

The file is read with ``torch.load(weights_only=True)`` (mmengine's data-only globals allowed, nothing else), its
``state_dict`` (or the whole file when it is a plain state dict) is renamed by :func:`convert_official_state_dict`
and every key must be one the official CMT detector has: anything else is refused with a ``ValueError`` naming it.

Renaming (official → plugin):

* head: ``pts_bbox_head.shared_conv.{conv,bn}`` → ``pts_bbox_head.core.shared_conv.{0,1}``;
  ``{bev,rv}_embedding`` → ``core.coords.{bev,rv}_embedding``; ``reference_points`` → ``core.reference_points``;
  ``transformer.decoder.layers.L.attentions.{0,1}.attn.*`` → ``core.decoder.layers.L.{self,cross}_attn.*``
  (``in_proj_weight/bias``, ``out_proj``: mmcv's ``nn.MultiheadAttention`` and ``FlashMHA`` use the same names);
  ``ffns.0.layers.0.0`` / ``ffns.0.layers.1`` → ``ffn.0`` / ``ffn.3``; ``norms.{0,1,2}`` → ``norm{1,2,3}``;
  ``transformer.decoder.post_norm`` → ``core.decoder.post_norm``; ``task_heads.0.<branch>.<i>`` →
  ``core.task_head.<branch>.<i>`` (one task only: the plugin's head holds all classes in one group);
* VoVNet: ``img_backbone.stem.stem_N/{conv,norm}`` → ``img_backbone.body.stem.(N-1).{0,1}``;
  ``img_backbone.stageS.OSAS_B.layers.I.OSAS_B_I/{conv,norm}`` → ``img_backbone.body.stageS.K.layers.I.{0,1}``,
  ``...concat.OSAS_B_concat/{conv,norm}`` → ``...K.concat.{0,1}``, ``...ese.fc`` → ``...K.ese.fc``, with
  ``K = B - 1`` in stage 2 and ``K = B`` in stages 3-5 (their index 0 is the max pool);
* CPFPN: ``img_neck.lateral_convs.I.conv`` → ``img_neck.body.lateral.I``; ``img_neck.fpn_convs.0.conv`` →
  ``img_neck.body.fpn_conv``;
* unchanged (the same mmdet / mmdet3d modules in both versions): ``img_backbone`` of the ResNet configs
  (``conv1``, ``bn1``, ``layerN``), ``pts_middle_encoder``, ``pts_backbone``, ``pts_neck``. Their entries of the
  state dict's ``_metadata`` (module versions) are kept: mmdet3d's spconv-2 loader reads them to decide whether a
  sparse-conv kernel is in spconv 2's layout (version 2, what the official spconv-2 training saved) or must be
  permuted from mmcv's spconv 1 layout (no version).

Classes: official checkpoints predict the official class order :data:`OFFICIAL_CLASSES` (the mmdet3d 1.0 nuScenes
order), which the paper configs here use. A config with another order can pass ``target_classes`` to
:func:`convert_official_state_dict`, which permutes the rows of the final ``cls_logits`` conv within each decoder
layer's group.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SCHEME = "cmt-official://"
OFFICIAL_CLASSES: tuple[str, ...] = (
    "car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle", "pedestrian",
    "traffic_cone",
)  # fmt: skip

_PASS_THROUGH = ("pts_middle_encoder", "pts_backbone", "pts_neck", "img_backbone.conv1", "img_backbone.bn1")
_CORE = "pts_bbox_head.core."
_DEC = r"pts_bbox_head\.transformer\.decoder\."
_NORM_NAMES = ("norm1", "norm2", "norm3")


def _vov_block(stage: str, block: str) -> str:
    s, b = int(stage), int(block)
    return str(b - 1 if s == 2 else b)


# (pattern, replacement function) over full keys; the first match wins
_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    # ---- head
    (re.compile(r"pts_bbox_head\.shared_conv\.conv\.(weight)$"), lambda m: f"{_CORE}shared_conv.0.{m[1]}"),
    (
        re.compile(r"pts_bbox_head\.shared_conv\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)$"),
        lambda m: f"{_CORE}shared_conv.1.{m[1]}",
    ),
    (re.compile(r"pts_bbox_head\.reference_points\.weight$"), lambda m: f"{_CORE}reference_points.weight"),
    (
        re.compile(r"pts_bbox_head\.(bev_embedding|rv_embedding)\.([02])\.(weight|bias)$"),
        lambda m: f"{_CORE}coords.{m[1]}.{m[2]}.{m[3]}",
    ),
    (
        re.compile(
            _DEC + r"layers\.(\d+)\.attentions\.([01])\.attn\.(in_proj_weight|in_proj_bias|out_proj\.weight"
            r"|out_proj\.bias)$"
        ),
        lambda m: f"{_CORE}decoder.layers.{m[1]}.{('self_attn', 'cross_attn')[int(m[2])]}.{m[3]}",
    ),
    (
        re.compile(_DEC + r"layers\.(\d+)\.ffns\.0\.layers\.0\.0\.(weight|bias)$"),
        lambda m: f"{_CORE}decoder.layers.{m[1]}.ffn.0.{m[2]}",
    ),
    (
        re.compile(_DEC + r"layers\.(\d+)\.ffns\.0\.layers\.1\.(weight|bias)$"),
        lambda m: f"{_CORE}decoder.layers.{m[1]}.ffn.3.{m[2]}",
    ),
    (
        re.compile(_DEC + r"layers\.(\d+)\.norms\.([012])\.(weight|bias)$"),
        lambda m: f"{_CORE}decoder.layers.{m[1]}.{_NORM_NAMES[int(m[2])]}.{m[3]}",
    ),
    (re.compile(_DEC + r"post_norm\.(weight|bias)$"), lambda m: f"{_CORE}decoder.post_norm.{m[1]}"),
    (
        re.compile(r"pts_bbox_head\.task_heads\.0\.(center|height|dim|rot|vel|cls_logits)\.(\d+)\.(weight|bias)$"),
        lambda m: f"{_CORE}task_head.{m[1]}.{m[2]}.{m[3]}",
    ),
    # ---- VoVNet
    (
        re.compile(r"img_backbone\.stem\.stem_([123])/(conv|norm)\.(.+)$"),
        lambda m: f"img_backbone.body.stem.{int(m[1]) - 1}.{0 if m[2] == 'conv' else 1}.{m[3]}",
    ),
    (
        re.compile(r"img_backbone\.stage([2-5])\.OSA\1_(\d+)\.layers\.(\d+)\.OSA\1_\2_\3/(conv|norm)\.(.+)$"),
        lambda m: (
            f"img_backbone.body.stage{m[1]}.{_vov_block(m[1], m[2])}.layers.{m[3]}.{0 if m[4] == 'conv' else 1}.{m[5]}"
        ),
    ),
    (
        re.compile(r"img_backbone\.stage([2-5])\.OSA\1_(\d+)\.concat\.OSA\1_\2_concat/(conv|norm)\.(.+)$"),
        lambda m: f"img_backbone.body.stage{m[1]}.{_vov_block(m[1], m[2])}.concat.{0 if m[3] == 'conv' else 1}.{m[4]}",
    ),
    (
        re.compile(r"img_backbone\.stage([2-5])\.OSA\1_(\d+)\.ese\.fc\.(weight|bias)$"),
        lambda m: f"img_backbone.body.stage{m[1]}.{_vov_block(m[1], m[2])}.ese.fc.{m[3]}",
    ),
    # ---- CPFPN
    (
        re.compile(r"img_neck\.lateral_convs\.(\d+)\.conv\.(weight|bias)$"),
        lambda m: f"img_neck.body.lateral.{m[1]}.{m[2]}",
    ),
    (re.compile(r"img_neck\.fpn_convs\.0\.conv\.(weight|bias)$"), lambda m: f"img_neck.body.fpn_conv.{m[1]}"),
    # ---- unchanged mmdet / mmdet3d modules
    (re.compile(r"img_backbone\.(conv1|bn1|layer[1-4])\..+$"), lambda m: m[0]),
    (re.compile(r"(pts_middle_encoder|pts_backbone|pts_neck)\..+$"), lambda m: m[0]),
]


def convert_official_key(key: str) -> str | None:
    """The plugin's name of one official CMT state-dict key, or None when the official detector has no such key."""
    for pattern, repl in _RULES:
        m = pattern.match(key)
        if m:
            return repl(m)
    return None


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    target_classes: Sequence[str] | None = None,
    source_classes: Sequence[str] = OFFICIAL_CLASSES,
    source: str = "state dict",
) -> dict[str, torch.Tensor]:
    """Rename an official CMT state dict to the plugin's key names (see the module docstring).

    Args:
        state_dict: official keys (``module.`` prefixes of distributed wrappers are stripped).
        target_classes: class order of the config that will load the weights; when it differs from
            ``source_classes`` the final ``cls_logits`` conv rows are permuted per decoder-layer group.
        source: a name for error messages (the file).
    Raises:
        ValueError: a key the official CMT detector does not have, or a class missing from ``source_classes``.
    """
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    unknown: list[str] = []
    for key, value in state_dict.items():
        key = _strip_module(key)
        new = convert_official_key(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:  # module versions of the unchanged mmdet/mmdet3d modules (spconv layout, BN)
        out._metadata = OrderedDict(  # type: ignore[attr-defined]
            (_strip_module(k), v)
            for k, v in metadata.items()
            if _strip_module(k).startswith(_PASS_THROUGH) or re.match(r"img_backbone\.layer[1-4]", _strip_module(k))
        )
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise ValueError(f"{source}: not an official CMT checkpoint key: {shown}")
    if target_classes is not None and tuple(target_classes) != tuple(source_classes):
        _permute_classes(out, list(source_classes), list(target_classes), source)
    return out


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def _permute_classes(sd: dict[str, torch.Tensor], source: list[str], target: list[str], where: str) -> None:
    if sorted(target) != sorted(source):
        raise ValueError(f"{where}: cannot map classes {source} to {target} (not the same set of class names)")
    prefix = f"{_CORE}task_head.cls_logits."
    layers = sorted({int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)})
    if not layers:
        raise ValueError(f"{where}: no cls_logits weights to reorder")
    perm = torch.tensor([source.index(c) for c in target])
    for name in ("weight", "bias"):
        key = f"{prefix}{layers[-1]}.{name}"
        t = sd[key]
        grouped = t.reshape(-1, len(source), *t.shape[1:])  # (groups, C, ...)
        sd[key] = grouped[:, perm].reshape(t.shape).contiguous()


def load_official_checkpoint(filename: str | os.PathLike, map_location: str | torch.device | None = None) -> dict:
    """mmengine checkpoint loader for ``cmt-official://PATH``: returns ``{"state_dict": ..., "meta": ...}``."""
    from polyzoo.detection.checkpoint import mmengine_safe_globals

    name = str(filename)
    path = Path(name[len(SCHEME) :] if name.startswith(SCHEME) else name)
    if not path.is_file():
        raise FileNotFoundError(f"official CMT checkpoint {path} does not exist")
    try:
        with mmengine_safe_globals():
            obj = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a weights-only loadable checkpoint ({type(err).__name__}: {err})") from None
    state_dict = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or a dict with 'state_dict')")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    classes = meta.get("CLASSES")
    if classes is not None and tuple(classes) != OFFICIAL_CLASSES:
        logger.warning("%s: checkpoint CLASSES %s differ from the official order %s", path, classes, OFFICIAL_CLASSES)
    converted = convert_official_state_dict(state_dict, source=str(path))
    logger.info("loaded official CMT checkpoint %s (%d tensors renamed)", path, len(converted))
    return {"state_dict": converted, "meta": {"official_cmt_checkpoint": str(path)}}


def resolve_official_args(argv: Sequence[str], tmp_dir: str | os.PathLike) -> list[str]:
    """Command-line arguments with every ``cmt-official://PATH`` replaced by a converted copy in ``tmp_dir``.

    ``tools/test.py`` uses it so that its CHECKPOINT argument may name an official checkpoint: the file is read and
    renamed once by :func:`load_official_checkpoint` (weights only) and written as a plain mmengine-style
    ``{"state_dict", "meta"}`` file (module versions in ``_metadata`` kept), which the runner then loads as usual.
    """
    out = []
    for i, arg in enumerate(argv):
        if isinstance(arg, str) and arg.startswith(SCHEME):
            converted = load_official_checkpoint(arg)
            target = Path(tmp_dir) / f"official_cmt_{i}.pth"
            torch.save(converted, target)
            arg = str(target)
        out.append(arg)
    return out


def register_mmengine_scheme() -> None:
    """Make ``cmt-official://PATH`` usable as ``load_from`` / a ``tools/test.py`` checkpoint (idempotent)."""
    from mmengine.runner import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes=SCHEME, loader=load_official_checkpoint, force=True)
