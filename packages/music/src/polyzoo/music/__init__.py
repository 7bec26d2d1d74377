"""polyzoo.music: language-model finetuning on drum grooves written as text.

Papers:
- Language models are drummers: drum composition with natural language pre-training

See packages/music/README.md. Built on transformers and symusic; shared math comes from ``polyzoo.shared``.
"""

from importlib.metadata import version as _version

__version__ = _version("polyzoo-music")
