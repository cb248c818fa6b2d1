"""How much line detail a character has, and how well that predicts its student's PSNR (CPU, seconds).

    PYTHONPATH=src python benchmarks/character_detail.py IMAGE.png [...] [--psnr NAME=DB ...] [--shift PX]

G: the mean squared difference between neighbouring pixels over the whole 512² canvas, in the metric's display
space (kyara.eval.metrics.to_display: colour × alpha over black, and alpha), mean over the four channels. To first
order a flow error of e px costs e² × G of squared error, so at equal flow precision a character's PSNR falls 1 dB
for every dB of G. With --psnr NAME=DB (NAME: an image's file stem) for two or more of the images, fits
PSNR = a · 10 log10(G) + b by least squares over them and prints each image's predicted PSNR and residual.
--shift PX uses S(PX) instead of G: the display-space MSE of the image against itself moved by a uniform PX-pixel
flow, bilinear like the warps, mean over 8 directions; it is G's measure without the first-order approximation.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from kyara.eval.metrics import to_display
from kyara.image import load_image
from kyara.nn.warp import apply_flow


def detail(image: torch.Tensor) -> float:
    """G of image (4, H, W), model space (kyara.image.load_image's)."""
    im = to_display(image.unsqueeze(0))[0]                             # (4, H, W) in [0, 1]
    gx = im[:, :-1, 1:] - im[:, :-1, :-1]
    gy = im[:, 1:, :-1] - im[:, :-1, :-1]
    return float((gx ** 2 + gy ** 2).mean())


def shift_sensitivity(image: torch.Tensor, px: float, directions: int = 8) -> float:
    """S(px) of image (4, H, W), model space: the display-space MSE between the image and itself moved by a
    uniform px-pixel flow (kyara.nn.warp.apply_flow: bilinear, as the student's and the teacher's warps), mean
    over `directions` directions at (k + ½)·360°/directions. Unlike G it holds beyond first order (a thin
    strand moved by a whole pixel costs its contrast, not px² times its gradient)."""
    batch = image.unsqueeze(0).expand(directions, -1, -1, -1)
    angle = (torch.arange(directions, dtype=torch.float64) + 0.5) * 2 * math.pi / directions
    step = torch.stack([angle.cos(), angle.sin()], 1).float() * px * 2 / image.shape[-1]   # [-1, 1] units: 2/W a px
    flow = step[:, :, None, None].expand(-1, -1, *image.shape[-2:])
    moved = to_display(apply_flow(batch, flow))
    return float(((moved - to_display(batch)) ** 2).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+")
    ap.add_argument("--shift", type=float, default=None, metavar="PX",
                    help="use S(PX) instead of G: the display-space MSE of each image moved by a uniform PX-pixel "
                         "flow, mean over 8 directions (holds beyond first order)")
    ap.add_argument("--psnr", action="append", default=[], metavar="NAME=DB",
                    help="a measured PSNR for the image whose file stem is NAME (repeatable)")
    args = ap.parse_args()
    measured = {}
    for item in args.psnr:
        name, _, value = item.partition("=")
        try:
            measured[name] = float(value)
        except ValueError:
            ap.error(f"--psnr {item!r}: expected NAME=DB, e.g. twin_tails=31.8")
    stems = [Path(p).stem for p in args.images]
    unknown = sorted(set(measured) - set(stems))
    if unknown:
        ap.error(f"--psnr names {', '.join(unknown)}, which are not among the images' file stems ({', '.join(stems)})")
    if args.shift is not None and not 0 < args.shift <= 8:
        ap.error(f"--shift must be in (0, 8] pixels, got {args.shift}")
    measure = "G" if args.shift is None else f"S({args.shift:g} px)"
    values = {s: detail(load_image(p)) if args.shift is None else shift_sensitivity(load_image(p), args.shift)
              for s, p in zip(stems, args.images)}
    flat = [s for s, v in values.items() if v == 0]
    if flat:
        ap.error(f"{', '.join(flat)}: no detail at all (every pixel equal): nothing to predict from")
    g_db = {s: 10 * math.log10(v) for s, v in values.items()}
    fit = None
    if len(measured) >= 2:
        x = torch.tensor([g_db[s] for s in measured], dtype=torch.float64)
        y = torch.tensor(list(measured.values()), dtype=torch.float64)
        a = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
        fit = (a, float(y.mean() - a * x.mean()))
        print(f"fit over {len(measured)} characters: PSNR = {fit[0]:.3f} · 10 log10({measure}) + {fit[1]:.2f}\n")
    print(f"| character | {measure} | 10 log10({measure}) | measured PSNR | predicted PSNR | residual |")
    print("|---|---|---|---|---|---|")
    for s in stems:
        pred = fit[0] * g_db[s] + fit[1] if fit else None
        m = measured.get(s)
        cells = [f"{m:.2f} dB" if m is not None else "—", f"{pred:.2f} dB" if pred is not None else "—",
                 f"{m - pred:+.2f} dB" if m is not None and pred is not None else "—"]
        print(f"| {s} | {10 ** (g_db[s] / 10):.5f} | {g_db[s]:.2f} dB | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
