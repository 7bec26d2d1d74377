"""polyzoo.vision: ECA-Net, EMO (iRMB) and SoT as timm models.

Papers:
- ECA-Net: Efficient Channel Attention (CVPR 2020)
- EMO: Rethinking Mobile Block for Efficient Attention-based Models (ICCV 2023)
- SoT: Delving deeper into the classification head for transformer (second-order transformer)

See packages/vision/README.md. Built on timm; shared math comes from ``polyzoo.shared``.
"""

from importlib.metadata import version as _version

__version__ = _version("polyzoo-vision")
