"""Process-level performance settings.

glibc's default malloc returns large freed blocks to the OS and maps fresh ones, so every new large tensor pays
first-touch page faults (measured on our 2-core machines: ~30 ms per 100 MB; an ECA stage forward+backward
133 → 21 ms and a ResNet-50 over 32 frames 5.69 → 3.90 s with the setting below; ../shared/notes). The setting
keeps freed memory in the process instead (PyTorch's CPU tuning guide reaches the same effect with
jemalloc/tcmalloc). The cost: memory freed after a peak is not returned to the OS until the process exits.
"""

from __future__ import annotations

import os
import platform
import sys

__all__ = ["GLIBC_MALLOC_TUNABLES", "reexec_with_tuned_malloc"]

GLIBC_MALLOC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
OPT_OUT = "POLYZOO_MALLOC_TUNING"


def reexec_with_tuned_malloc(argv: list[str]) -> None:
    """Replace this process by ``argv`` run with :data:`GLIBC_MALLOC_TUNABLES`, once (glibc reads the variable
    only at start). Does nothing off Linux/glibc, when ``GLIBC_TUNABLES`` is already set, or when
    ``POLYZOO_MALLOC_TUNING=0``."""
    if (
        platform.system() != "Linux"
        or platform.libc_ver()[0] != "glibc"
        or "GLIBC_TUNABLES" in os.environ
        or os.environ.get(OPT_OUT) == "0"
    ):
        return
    os.environ["GLIBC_TUNABLES"] = GLIBC_MALLOC_TUNABLES
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(argv[0], argv)
    except OSError:  # could not re-execute: carry on with the default allocator
        del os.environ["GLIBC_TUNABLES"]
