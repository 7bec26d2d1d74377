"""RefT's mmdet models (registered in ``mmdet.registry.MODELS``) and its references."""

from .reft import ROLE_KEY, RefT
from .reft_head import RefTHead
from .support_bank import compute_support_bank
from .support_refs import SupportRefs

__all__ = ["ROLE_KEY", "RefT", "RefTHead", "SupportRefs", "compute_support_bank"]
