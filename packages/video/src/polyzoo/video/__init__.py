"""polyzoo.video: TCP, temporal-attentive covariance pooling for video recognition, with a decord clip pipeline.

Papers:
- TCP: Temporal-attentive Covariance Pooling Networks for Video Recognition (NeurIPS 2021)

See packages/video/README.md. Built on decord and timm/torchvision backbones; shared math comes from ``polyzoo.shared``.
"""

from importlib.metadata import version as _version

__version__ = _version("polyzoo-video")
