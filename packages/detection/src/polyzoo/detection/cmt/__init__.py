"""CMT (Cross Modal Transformer, ICCV 2023) for mmdet3d 1.x.

Paper: Yan et al., "Cross Modal Transformer: Towards Fast and Robust 3D Object Detection", ICCV 2023.
Official code: https://github.com/junjie18/CMT.

The submodules ``bbox``, ``positional``, ``transformer``, ``denoise``, ``head``, ``masking`` and ``vovnet`` are plain
PyTorch (no OpenMMLab import). ``mmdet3d_plugin`` registers the mmdet3d adapters; configs import it with
``custom_imports``; it also registers ``CmtNuScenesDataset`` (info files read by the restricted unpickler of
``safe_pickle``) and the ``cmt-official://`` checkpoint scheme (``official_checkpoint``: official key names → the
plugin's). Importing this package stays light.
"""
