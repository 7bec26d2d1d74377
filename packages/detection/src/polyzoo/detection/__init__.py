"""polyzoo.detection: CMT (mmdet3d plugin) and RefT (mmdet plugin).

Papers:
- CMT: Cross Modal Transformer (ICCV 2023)
- RefT: Reference Twice, a simple and unified baseline for few-shot instance segmentation

See packages/detection/README.md. Built on mmengine, mmcv, mmdet and mmdet3d; shared math comes from ``polyzoo.shared``.
"""

from importlib.metadata import version as _version

__version__ = _version("polyzoo-detection")
