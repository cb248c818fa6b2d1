"""Distillation of a teacher into a per-character Student (THA4 §4)."""
from kyara.distill.config import DistillConfig, Phase
from kyara.distill.loop import DistillResult, distill

__all__ = ["distill", "DistillConfig", "DistillResult", "Phase"]
