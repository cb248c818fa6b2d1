"""Evaluation of posers against each other: image-quality metrics (PSNR, SSIM, LPIPS).

Import the pieces from their modules: ``kyara.eval.metrics`` (psnr, ssim, compare, to_display) and
``kyara.eval.lpips`` (LPIPS, load_lpips). ``load_lpips`` is re-exported lazily here for convenience.
"""
from __future__ import annotations


def __getattr__(name):  # lazy: importing kyara.eval must not load torch modules it does not need
    if name in ("LPIPS", "load_lpips"):
        from kyara.eval import lpips
        return getattr(lpips, name)
    if name in ("psnr", "ssim", "compare", "to_display", "ImageMetrics"):
        from kyara.eval import metrics
        return getattr(metrics, name)
    raise AttributeError(name)
