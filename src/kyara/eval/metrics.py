"""Image-quality metrics for comparing a student's output with the teacher's (PSNR, SSIM, LPIPS).

Inputs are kyara model-space images (see ``kyara.image``): float tensors (N, 4, H, W) — a single
(4, H, W) image counts as N = 1 — with linear RGB and straight alpha, all in [-1, 1].

Every metric is computed on the *display* image (``to_display``): sRGB RGB premultiplied by alpha,
i.e. the character composited over black, plus the alpha channel, all in [0, 1]. Why:
- straight-alpha colour under alpha = 0 is invisible and arbitrary (a student may put anything
  there); premultiplying zeroes it, so only what can be seen counts, weighted by its coverage;
- sRGB is what a viewer sees; linear light would under-weight errors in dark regions (hair, eyes);
- alpha stays as a fourth channel, so a wrong silhouette is still penalised.
LPIPS sees only the composited RGB (it is an RGB network).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kyara.errors import KyaraError
from kyara.image import display_space, unit_to_signed

# SSIM as in Wang et al. 2004 and skimage's structural_similarity(gaussian_weights=True,
# sigma=1.5, use_sample_covariance=False, data_range=1).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _batch(images: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise KyaraError(f"{name}: expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] != 4 or not images.is_floating_point():
        raise KyaraError(f"{name}: expected a float (N, 4, H, W) model-space image batch, got "
                         f"{tuple(images.shape)} {images.dtype}")
    return images


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _batch(a, "a"), _batch(b, "b")
    if a.shape != b.shape:
        raise KyaraError(f"cannot compare images of different shapes: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b


def to_display(images: torch.Tensor) -> torch.Tensor:
    """(N, 4, H, W) model space → (N, 4, H, W) display space in [0, 1], same dtype.

    Channels 0–2: sRGB colour × alpha (composited over black); channel 3: alpha. Out-of-range
    model values are clipped (what a saved PNG would show, up to 8-bit rounding).
    """
    return display_space(_batch(images, "images"))


def display_rgb_signed(images: torch.Tensor) -> torch.Tensor:
    """(N, 4, H, W) model space → (N, 3, H, W) display RGB (over black) in [-1, 1], LPIPS's input."""
    return unit_to_signed(to_display(images)[:, :3])


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4, H, W) ×2 model space → (N,) float64 PSNR in dB of the display images (peak 1.0).

    MSE is taken over all four display channels. Identical images give +inf.
    """
    a, b = _pair(a, b)
    # float64 throughout: a half-precision sRGB curve alone would cap PSNR near 60 dB.
    mse = (to_display(a.double()) - to_display(b.double())).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse)


def _gaussian_window(device: torch.device) -> torch.Tensor:
    """1-D normalised Gaussian, SSIM_WINDOW taps, float64 (scipy.ndimage's kernel for truncate=3.5)."""
    x = torch.arange(SSIM_WINDOW, dtype=torch.float64, device=device) - (SSIM_WINDOW - 1) / 2
    w = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return w / w.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) ×2 in [0, 1] → (N, C, H-10, W-10) float32 local SSIM.

    Gaussian window 11, σ 1.5, population covariances, C1 = (0.01)², C2 = (0.03)². Only windows that
    lie fully inside the image are kept ("valid"), which is exactly the region skimage averages
    (it filters with reflect padding, then crops (11-1)/2 = 5 pixels from every border).
    Computed in float32 about each channel's mean: 3× faster than float64 on CPU; the worst case
    found (flat near-white next to flat black) is 1.4e-5 from float64 scikit-image.
    """
    n, c, h, w = x.shape
    if min(h, w) < SSIM_WINDOW:
        raise KyaraError(f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW}, got {h}×{w}")
    # Variances and covariance are shift-invariant: moments are taken about each channel's mean so
    # that float32 E[x²] − E[x]² does not cancel catastrophically in flat bright regions.
    offset = x.double().mean(dim=(2, 3), keepdim=True)
    x, y = (x.double() - offset).float(), (y.double() - offset).float()
    # The five local moments are blurred in one separable depthwise convolution.
    moments = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    g = _gaussian_window(x.device).float()
    k = moments.shape[1]
    blurred = F.conv2d(F.conv2d(moments, g.view(1, 1, 1, SSIM_WINDOW).repeat(k, 1, 1, 1), groups=k),
                       g.view(1, 1, SSIM_WINDOW, 1).repeat(k, 1, 1, 1), groups=k)
    mu_x, mu_y, xx, yy, xy = blurred.split(c, dim=1)
    var_x, var_y, cov_xy = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    mu_x, mu_y = mu_x + offset.float(), mu_y + offset.float()
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4, H, W) ×2 model space → (N,) float64 mean SSIM over the 4 display channels (1 = identical).

    Equals the mean over channels of skimage's per-channel SSIM with the settings of ``ssim_map``.
    H, W ≥ 11.
    """
    a, b = _pair(a, b)
    return ssim_map(to_display(a.double()), to_display(b.double())).double().mean(dim=(1, 2, 3))


@dataclass(frozen=True)
class ImageMetrics:
    """Batch means. psnr in dB (inf if every pair is identical); ssim in [-1, 1]; lpips ≥ 0 or None."""
    psnr: float
    ssim: float
    lpips: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {"psnr": self.psnr, "ssim": self.ssim, "lpips": self.lpips}


def compare(a: torch.Tensor, b: torch.Tensor, lpips: nn.Module | None = None) -> ImageMetrics:
    """Compare two model-space batches (N, 4, H, W) pair by pair; return the batch means.

    Pass ``lpips=kyara.eval.load_lpips(device)`` to include LPIPS (skipped when None; typed as a plain
    module because kyara.eval.lpips imports this module, not the other way round). Runs under
    ``torch.no_grad``. PSNR's mean is over per-image dB values (not the dB of the mean MSE).
    """
    a, b = _pair(a, b)
    with torch.no_grad():
        p = psnr(a, b)
        s = ssim(a, b)
        d = None
        if lpips is not None:
            weights_device = next(iter(lpips.buffers())).device
            d = float(lpips(a.to(weights_device), b.to(weights_device)).double().mean())
    return ImageMetrics(psnr=float(p.mean()), ssim=float(s.mean()), lpips=d)
