"""polyzoo.recsys: xDeepInt with group-lasso FTRL and streaming CTR data.

Papers:
- xDeepInt: a polynomial interaction network for CTR prediction (DLP-KDD 2020)

See packages/recsys/README.md. Built on nothing beyond polyzoo-shared; shared math comes from ``polyzoo.shared``.
"""

from importlib.metadata import version as _version

__version__ = _version("polyzoo-recsys")
