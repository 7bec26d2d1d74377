"""polyzoo.video: TCP, temporal-attentive covariance pooling for video recognition, with a decord clip pipeline.

Papers:
- TCP: Temporal-attentive Covariance Pooling Networks for Video Recognition (NeurIPS 2021)

Modules (imported on demand, so ``import polyzoo.video`` stays light):
- ``tcp``: the TCP head (``TCPHead``, temporal spatial/channel attention, temporal convolution);
- ``models``: TSN/TSM ResNets, timm backbones, ``VideoClassifier`` with ``head="gap" | "tcp"``, ``build_model``;
- ``data``: the decord clip pipeline (annotation lists, TSN sampling, transforms, multi-view testing);
- ``synthetic``: temporal-order clips for the quick reproduction; ``train``: Trainer glue; ``cli``: ``polyzoo video``.

See packages/video/README.md. Built on decord and timm/torchvision backbones; shared math comes from ``polyzoo.shared``.
"""

from importlib.metadata import version as _version

__version__ = _version("polyzoo-video")
