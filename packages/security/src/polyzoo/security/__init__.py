"""polyzoo.security: backdoor attacks against dataset distillation (NAIVEATTACK, DOORPING), distillation
methods and defenses.

Papers:
- Backdoor Attacks Against Dataset Distillation (NDSS 2023)

See packages/security/README.md. Built on nothing beyond polyzoo-shared; shared math comes from ``polyzoo.shared``.
"""

from importlib.metadata import version as _version

__version__ = _version("polyzoo-security")
