"""evaluate(): a student character against its teacher on held-out poses (THA4 Table 4 protocol)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from kyara.pose import ROTATION
from kyara.pose_sampler import sample_poses

# Held-out poses come from their own stream, never from a training (seed, chunk) stream.
HELDOUT_SEED = 2**31 - 1


@dataclass(frozen=True)
class Evaluation:
    psnr: float
    ssim: float
    lpips: float | None
    poses: int
    teacher: str
    rotation_scale: float = 1.0

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(character, teacher, num_poses: int = 1000, batch_size: int = 8, lpips: bool = True,
             seed: int = HELDOUT_SEED, progress: bool = True, rotation_scale: float = 1.0) -> Evaluation:
    """Mean PSNR / SSIM / LPIPS of character (student) vs teacher over num_poses held-out poses.

    Metrics are computed in display space (kyara.eval.metrics.to_display). rotation_scale in [0, 1] multiplies
    the poses' six rotation parameters (head, neck, body, breathing; every range holds 0): 1 is the sampler's
    poses, which turn as far as the parameters go; smaller values are closer to live use, where a performer
    mostly faces the camera (0: expressions only). The expressions stay the same poses either way.
    """
    if not 0.0 <= rotation_scale <= 1.0:
        raise ValueError(f"evaluate: rotation_scale must be in [0, 1], got {rotation_scale}")
    from tqdm import tqdm

    from kyara.eval.metrics import psnr, ssim
    from kyara.image import to_premultiplied, to_straight

    lpips_net = None
    if lpips:
        from kyara.eval.lpips import load_lpips

        lpips_net = load_lpips(teacher.device)
    poses = sample_poses(num_poses, torch.Generator().manual_seed(seed))
    poses[:, ROTATION] *= rotation_scale
    # A premultiplied-colour teacher (THA4, issue 17) takes premultiplied input; its output is made
    # straight like Character.render's, so both sides are straight model space.
    premultiplied = getattr(teacher, "colour", "straight") == "premultiplied"
    image = character.image.to(teacher.device)
    prepared = teacher.prepare(to_premultiplied(image) if premultiplied else image)
    sums = {"psnr": 0.0, "ssim": 0.0, "lpips": 0.0}
    for s in tqdm(range(0, num_poses, batch_size), disable=not progress, desc="eval", unit="batch"):
        chunk = poses[s:s + batch_size]
        target = teacher.pose(prepared, chunk.to(teacher.device)).float()
        target = to_straight(target) if premultiplied else target
        pred = character.render(chunk).to(target.device)
        sums["psnr"] += float(psnr(pred, target).sum())
        sums["ssim"] += float(ssim(pred, target).sum())
        if lpips_net is not None:
            sums["lpips"] += float(lpips_net(pred, target).sum())
    return Evaluation(sums["psnr"] / num_poses, sums["ssim"] / num_poses,
                      sums["lpips"] / num_poses if lpips_net is not None else None, num_poses, teacher.name,
                      rotation_scale)
