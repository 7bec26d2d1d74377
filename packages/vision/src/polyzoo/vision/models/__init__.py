"""The vision models; importing this package registers them in timm's registry."""

from polyzoo.vision.models.eca_net import EcaMobileNetV2, EcaResNet
from polyzoo.vision.models.emo import EMO, iRMB
from polyzoo.vision.models.sot import MGCrP, SoT, SoTHead, SoTViT, sot_wrap

# every model this package registers in timm
MODEL_NAMES = (
    "eca_resnet18",
    "eca_resnet34",
    "eca_resnet50",
    "eca_resnet101",
    "eca_resnet152",
    "eca_mobilenetv2",
    "emo_1m",
    "emo_2m",
    "emo_5m",
    "emo_6m",
    "sot_tiny",
    "sot_small",
    "sot_base",
    "sot_deit_tiny_patch16_224",
    "sot_deit_small_patch16_224",
)

__all__ = ["EMO", "MODEL_NAMES", "EcaMobileNetV2", "EcaResNet", "MGCrP", "SoT", "SoTHead", "SoTViT", "iRMB", "sot_wrap"]
