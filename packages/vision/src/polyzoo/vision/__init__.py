"""polyzoo.vision: ECA-Net, EMO (iRMB) and SoT as timm models.

Papers:
- ECA-Net: Efficient Channel Attention (CVPR 2020)
- EMO: Rethinking Mobile Block for Efficient Attention-based Models (ICCV 2023)
- SoT: Delving deeper into the classification head for transformer (second-order transformer)

Importing this package registers ``eca_resnet18/34/50/101/152``, ``eca_mobilenetv2``, ``emo_1m/2m/5m/6m``,
``sot_tiny/small/base`` and ``sot_deit_tiny/small_patch16_224`` in timm's registry, so
``timm.create_model("emo_1m")`` works. See packages/vision/README.md.
"""

from importlib.metadata import version as _version

from polyzoo.vision import models
from polyzoo.vision.models import EMO, EcaMobileNetV2, EcaResNet, MGCrP, SoT, SoTHead, SoTViT, iRMB, sot_wrap

__version__ = _version("polyzoo-vision")

__all__ = [
    "EMO",
    "EcaMobileNetV2",
    "EcaResNet",
    "MGCrP",
    "SoT",
    "SoTHead",
    "SoTViT",
    "__version__",
    "iRMB",
    "models",
    "sot_wrap",
]
