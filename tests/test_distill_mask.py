"""kyara.distill.mask: the movable-parts mask derived from a teacher, and the THA4 mask file reader.

A tiny analytic teacher makes the expected mask exact: its face-morphed image changes by a known amount
in known rectangles for the expression parameters, and everywhere for the rotation parameters (which the
mask must ignore: it is about the face parameters only).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from kyara.distill.mask import CHANGE_THRESHOLD, DILATE_PX, derive_face_mask, load_face_mask
from kyara.geometry import STUDENT_FACE_BOX
from kyara.image import ImageError
from kyara.pose import INDEX

MOVES = (20, 30, 50, 60)       # rows 20:30, cols 50:60 of STUDENT_FACE_BOX: changes by 0.5 per unit of mouth_aaa
BARELY = (90, 100, 90, 100)    # changes by 1e-4 per unit: far below CHANGE_THRESHOLD


class Outputs(NamedTuple):
    face_morphed_full: torch.Tensor


class RectTeacher:
    """face_morphed_full = 0, plus 0.5·mouth_aaa in MOVES, 1e-4·mouth_aaa in BARELY (face-box coordinates),
    plus head_y everywhere (a rotation the mask must not see)."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls = []

    def pose_all(self, prepared, poses: torch.Tensor) -> Outputs:
        self.calls.append(poses.clone())
        out = torch.zeros(poses.shape[0], 4, 512, 512)
        out += poses[:, INDEX["head_y"], None, None, None]
        face = STUDENT_FACE_BOX.crop(out)   # a view: writes land in `out`
        aaa = poses[:, INDEX["mouth_aaa"], None, None, None]
        for (r0, r1, c0, c1), gain in ((MOVES, 0.5), (BARELY, 1e-4)):
            face[:, :, r0:r1, c0:c1] += gain * aaa
        return Outputs(out)


def _expected(rect) -> torch.Tensor:
    r0, r1, c0, c1 = rect
    m = torch.zeros(1, 1, 128, 128)
    m[..., r0:r1, c0:c1] = 1
    return F.max_pool2d(m, 2 * DILATE_PX + 1, stride=1, padding=DILATE_PX)


def test_derived_mask_is_the_dilated_region_the_face_parameters_move():
    teacher = RectTeacher()
    mask = derive_face_mask(teacher, None, num_poses=24, generator=torch.Generator().manual_seed(0), batch_size=5)
    assert mask.shape == (1, 1, 128, 128) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # exactly MOVES grown by DILATE_PX: BARELY (below the threshold) and the head rotation are not "movable"
    assert torch.equal(mask, _expected(MOVES))
    # rotation and breathing were zeroed for every pose after the neutral one; 24 poses in batches of 5
    posed = torch.cat(teacher.calls[1:])
    assert posed.shape[0] == 24 and not posed[:, INDEX["head_x"]:].any()
    assert not teacher.calls[0].any()                          # the reference: the rest pose


def test_threshold_is_on_the_mean_change_over_poses():
    assert 1e-4 < CHANGE_THRESHOLD < 0.5 * 0.1   # BARELY always below; MOVES above once mouth_aaa averages > 0.1
    teacher = RectTeacher()
    g = torch.Generator().manual_seed(1)
    mask = derive_face_mask(teacher, None, num_poses=8, generator=g)
    mean_aaa = float(torch.cat(teacher.calls[1:])[:, INDEX["mouth_aaa"]].mean())
    expected = _expected(MOVES) if 0.5 * mean_aaa > CHANGE_THRESHOLD else torch.zeros(1, 1, 128, 128)
    assert torch.equal(mask, expected)


def test_mask_file_is_cropped_to_the_student_face_box(tmp_path):
    rgb = np.zeros((512, 512, 3), np.uint8)
    top, left = STUDENT_FACE_BOX.top, STUDENT_FACE_BOX.left
    rgb[top + 10:top + 20, left + 30:left + 40] = 255      # white = movable
    rgb[0:10, 0:10] = 255                                  # outside the face box: dropped
    rgb[top + 50, left + 50] = (127, 255, 255)             # red channel below 128: not movable
    Image.fromarray(rgb).save(tmp_path / "mask.png")
    mask = load_face_mask(tmp_path / "mask.png")
    assert mask.shape == (1, 1, 128, 128)
    expected = torch.zeros(1, 1, 128, 128)
    expected[..., 10:20, 30:40] = 1
    assert torch.equal(mask, expected)


def test_mask_file_of_the_wrong_size_is_a_clear_error(tmp_path):
    Image.fromarray(np.zeros((256, 256, 3), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ImageError, match=r"small.png: face mask must be 512×512, got 256×256"):
        load_face_mask(tmp_path / "small.png")
