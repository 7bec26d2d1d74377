"""Process-level performance settings of the ``polyzoo`` command.

**Allocator.** glibc's default malloc returns large freed blocks to the OS and maps fresh ones, so every new large
tensor pays first-touch page faults (measured on our 2-core machines: ~30 ms per 100 MB; an ECA stage
forward+backward 133 → 21 ms and a ResNet-50 over 32 frames 5.69 → 3.90 s with the setting below; ../shared/notes).
The setting keeps freed memory in the process instead (PyTorch's CPU tuning guide reaches the same effect with
jemalloc/tcmalloc). The cost: memory freed after a peak is not returned to the OS until the process exits.

**OpenMP wait policy.** PyTorch's CPU kernels run on libgomp threads (one per core by default). Between parallel
regions an idle libgomp thread *spins* before it sleeps; when another process holds a core, the spinning threads and
the descheduled one wait on each other at every barrier, and a run of many small ops collapses (measured with
``tools/bench/bench_contention.py`` on the 2-core machine already loaded by other work: the small-CNN workload took
17 s with the default policy and 2.2 s with ``OMP_WAIT_POLICY=PASSIVE``, 1.8 s on one thread; README "Threads and
contention"). ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep at once. libgomp reads it when it is loaded (when
torch is imported), so :func:`apply_thread_defaults` must run before that; the ``polyzoo`` script does it first.
"""

from __future__ import annotations

import os
import platform
import sys

__all__ = [
    "GLIBC_MALLOC_TUNABLES",
    "THREAD_DEFAULTS",
    "allocator_description",
    "apply_thread_defaults",
    "reexec_with_tuned_malloc",
    "runtime_settings",
]

GLIBC_MALLOC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
OPT_OUT = "POLYZOO_MALLOC_TUNING"

THREAD_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Set by the ``polyzoo`` command unless the user set any OpenMP wait variable (``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT``) or ``POLYZOO_THREAD_TUNING=0``."""
THREAD_OPT_OUT = "POLYZOO_THREAD_TUNING"
_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def apply_thread_defaults(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Put :data:`THREAD_DEFAULTS` into ``environ`` (default ``os.environ``) unless the user chose a wait policy
    (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set) or opted out (``POLYZOO_THREAD_TUNING=0``); returns what was
    set. Takes effect only if torch (libgomp) is not loaded yet in this process, or in the processes it starts."""
    env = os.environ if environ is None else environ
    if env.get(THREAD_OPT_OUT) == "0" or any(v in env for v in _WAIT_VARIABLES):
        return {}
    env.update(THREAD_DEFAULTS)
    return dict(THREAD_DEFAULTS)


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


def allocator_description() -> str:
    """``tuned glibc malloc`` when :data:`GLIBC_MALLOC_TUNABLES` is in effect, else what ``GLIBC_TUNABLES`` says."""
    tunables = os.environ.get("GLIBC_TUNABLES")
    if tunables == GLIBC_MALLOC_TUNABLES:
        return f"tuned glibc malloc (GLIBC_TUNABLES={tunables})"
    return f"GLIBC_TUNABLES={tunables or '(unset)'} (glibc's default malloc)"


def runtime_settings() -> dict[str, str]:
    """What decides this process's speed and its floating-point results: torch's intra-/inter-op threads, the
    OpenMP/MKL variables, the allocator and whether deterministic algorithms are on (imports torch)."""
    import torch

    env = {k: os.environ.get(k, "(unset)") for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", *_WAIT_VARIABLES)}
    return {
        "torch threads (intra-op / inter-op)": f"{torch.get_num_threads()} / {torch.get_num_interop_threads()}",
        **env,
        "CPU cores": str(os.cpu_count()),
        "allocator": allocator_description(),
        "deterministic algorithms": str(torch.are_deterministic_algorithms_enabled()),
    }
