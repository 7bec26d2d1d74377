"""RefT's runner hooks (``mmdet.registry.HOOKS``)."""

from .support_bank_hook import RefTSupportBankHook

__all__ = ["RefTSupportBankHook"]
