"""Knowledge-distillation losses used by RELIANT's two host frameworks.

Paper: RELIANT (Dong et al., SDM 2023, arXiv 2301.01150); official code https://github.com/yushundong/RELIANT
(``src/CPF-master/distill_dgl.py``).

- ``kl_kd_loss``: Hinton et al.'s KL(teacher_T || student_T) · T² with temperature T (``batchmean``).
- ``euclidean_kd_loss``: the CPF path's ``my_loss`` mode 0, the Euclidean (Frobenius) distance between the student's
  and the teacher's class-probability matrices over the distilled nodes, ‖softmax(z_s) − p_t‖₂. With
  ``reduction="mean"`` it is divided by the square root of the node count (a scale that does not grow with the
  graph); ``"sum"`` is the plain norm of the official code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["euclidean_kd_loss", "kl_kd_loss"]


def kl_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL divergence of temperature-softened distributions, scaled by T² (Hinton et al. 2015).

    Args:
        student_logits, teacher_logits: (N, C).
    """
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"shapes differ: student {tuple(student_logits.shape)}, teacher {tuple(teacher_logits.shape)}")
    log_p = F.log_softmax(student_logits / temperature, dim=-1)
    log_q = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * temperature**2


def euclidean_kd_loss(student_logits: torch.Tensor, teacher_prob: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """‖softmax(student_logits) − teacher_prob‖₂ over all selected nodes and classes (CPF ``my_loss`` mode 0).

    Args:
        student_logits: (N, C). teacher_prob: (N, C) probabilities.
        reduction: ``"sum"`` (the plain norm) or ``"mean"`` (norm / sqrt(N)).
    """
    if student_logits.shape != teacher_prob.shape:
        raise ValueError(f"shapes differ: student {tuple(student_logits.shape)}, teacher {tuple(teacher_prob.shape)}")
    dist = torch.linalg.vector_norm(student_logits.softmax(dim=-1) - teacher_prob.detach())
    if reduction == "sum":
        return dist
    if reduction == "mean":
        return dist / max(student_logits.shape[0], 1) ** 0.5
    raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
