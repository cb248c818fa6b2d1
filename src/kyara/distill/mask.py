"""The movable-parts mask: where the face parameters change the teacher's output.

THA4 asks the user to paint this mask; we derive it from the teacher: pixels of the student face
box whose teacher output changes noticeably under random expression poses (no rotation) are
"movable", then the region is dilated so eyelid/mouth edges are inside it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from kyara.pose_sampler import face_only, sample_poses
from kyara.geometry import STUDENT_FACE_BOX
from kyara.image import ImageError, open_image

CHANGE_THRESHOLD = 0.02   # mean |Δ| in model space ([-1, 1]) counted as "moves"
DILATE_PX = 4


@torch.no_grad()
def derive_face_mask(teacher, prepared, num_poses: int, generator: torch.Generator, batch_size: int = 16,
                     on_poses: Callable[[int], None] | None = None) -> torch.Tensor:
    """→ (1, 1, 128, 128) float {0, 1} on the teacher's device, for STUDENT_FACE_BOX. on_poses(n) is called
    after each teacher batch with its number of poses (num_poses + 1 in all: the rest pose too)."""
    report = on_poses or (lambda n: None)
    poses = face_only(sample_poses(num_poses, generator))
    neutral = STUDENT_FACE_BOX.crop(teacher.pose_all(prepared, torch.zeros(1, poses.shape[1], device=teacher.device)).face_morphed_full)
    report(1)
    total = torch.zeros_like(neutral[:, :1])
    for start in range(0, num_poses, batch_size):
        chunk = poses[start:start + batch_size].to(teacher.device)
        face = STUDENT_FACE_BOX.crop(teacher.pose_all(prepared, chunk).face_morphed_full)
        total += (face.float() - neutral.float()).abs().mean(dim=1, keepdim=True).sum(dim=0, keepdim=True)
        report(len(chunk))
    change = total / num_poses
    mask = (change > CHANGE_THRESHOLD).float()
    return F.max_pool2d(mask, 2 * DILATE_PX + 1, stride=1, padding=DILATE_PX)


def load_face_mask(path: str | Path, device=None) -> torch.Tensor:
    """A THA4-style mask file: 512×512 image, white = movable. → (1, 1, 128, 128) {0, 1}."""
    img = open_image(path)
    if img.size != (512, 512):
        raise ImageError(f"{path}: face mask must be 512×512, got {img.size[0]}×{img.size[1]}")
    red = np.asarray(img.convert("RGB"))[:, :, 0]
    mask = torch.from_numpy((red >= 128).astype(np.float32))[None, None]
    return STUDENT_FACE_BOX.crop(mask).to(device)
