"""The pose distribution that distillation trains on and evaluation holds poses out from.

It sits beside kyara.pose (not inside kyara.distill) because both kyara.distill and kyara.eval draw
from it, and eval must not import distill.

THA4 samples poses from its teacher's (unreleased) training set. We design a distribution that
(a) covers every parameter's full range and (b) favours the combinations people actually make:

* 15 % "uniform": all 45 parameters independent and uniform in their ranges (coverage of
  unusual combinations, so the student never sees a region of pose space for the first time live).
* 85 % "structured", built per category like an expression:
  - eyebrows: with p=0.7 one eyebrow group (troubled/angry/lowered/raised/happy/serious), value
    U(0,1); both sides equal with p=0.75, else independent sides.
  - eyes: with p=0.8 one eye group (wink/happy_wink/surprised/relaxed/unimpressed/raised_lower_eyelid),
    symmetric with p=0.6 (winks are often one-sided); with p=0.2 a second eye group at U(0,0.5).
  - iris_small: with p=0.25, U(0,1), symmetric with p=0.8.
  - mouth: with p=0.8 one vowel/shape (aaa/iii/uuu/eee/ooo/delta) U(0,1); with p=0.3 corners
    (raised or lowered, sides equal with p=0.7) U(0,1); with p=0.15 smirk U(0,1).
  - iris rotation x/y: each with p=0.6 uniform in [-1, 1].
  - head_x, head_y, neck_z, body_y, body_z: each with p=0.85 uniform in [-1, 1] (trackers move these
    constantly); body_y/body_z are set equal to head_y/neck_z with p=0.3 (the official puppeteers
    copy them).
  - breathing: uniform in [0, 1].
All samples are exactly in range. Sampling is a pure function of a torch.Generator.
"""
from __future__ import annotations

import torch

from kyara.pose import HIGH, INDEX, LOW, NUM_PARAMETERS

EYEBROW_GROUPS = ("troubled", "angry", "lowered", "raised", "happy", "serious")
EYE_GROUPS = ("wink", "happy_wink", "surprised", "relaxed", "unimpressed", "raised_lower_eyelid")
MOUTH_SHAPES = ("aaa", "iii", "uuu", "eee", "ooo", "delta")
ROTATIONS = ("head_x", "head_y", "neck_z", "body_y", "body_z")
UNIFORM_FRACTION = 0.15


def _u(g: torch.Generator, *shape) -> torch.Tensor:
    return torch.rand(*shape, generator=g)


def sample_poses(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 45) float32 poses from the documented training distribution."""
    g = generator
    low, high = torch.from_numpy(LOW), torch.from_numpy(HIGH)
    out = torch.zeros(n, NUM_PARAMETERS)
    uniform = _u(g, n) < UNIFORM_FRACTION
    out[uniform] = low + (high - low) * _u(g, int(uniform.sum()), NUM_PARAMETERS)
    for i in torch.nonzero(~uniform).flatten().tolist():
        out[i] = _structured(g)
    return out


def _pair(pose: torch.Tensor, g: torch.Generator, group: str, value: float, p_symmetric: float) -> None:
    left, right = INDEX[f"{group}_left"], INDEX[f"{group}_right"]
    if _u(g, 1).item() < p_symmetric:
        pose[left] = pose[right] = value
    else:
        pose[left], pose[right] = value, _u(g, 1).item()


def _choice(g: torch.Generator, options: tuple[str, ...]) -> str:
    return options[int(torch.randint(len(options), (1,), generator=g))]


def _structured(g: torch.Generator) -> torch.Tensor:
    pose = torch.zeros(NUM_PARAMETERS)
    if _u(g, 1).item() < 0.7:
        _pair(pose, g, f"eyebrow_{_choice(g, EYEBROW_GROUPS)}", _u(g, 1).item(), 0.75)
    if _u(g, 1).item() < 0.8:
        first = _choice(g, EYE_GROUPS)
        _pair(pose, g, f"eye_{first}", _u(g, 1).item(), 0.6)
        if _u(g, 1).item() < 0.2:
            second = _choice(g, EYE_GROUPS)
            if second != first:
                _pair(pose, g, f"eye_{second}", 0.5 * _u(g, 1).item(), 0.6)
    if _u(g, 1).item() < 0.25:
        _pair(pose, g, "iris_small", _u(g, 1).item(), 0.8)
    if _u(g, 1).item() < 0.8:
        pose[INDEX[f"mouth_{_choice(g, MOUTH_SHAPES)}"]] = _u(g, 1).item()
    if _u(g, 1).item() < 0.3:
        corner = "raised" if _u(g, 1).item() < 0.5 else "lowered"
        _pair(pose, g, f"mouth_{corner}_corner", _u(g, 1).item(), 0.7)
    if _u(g, 1).item() < 0.15:
        pose[INDEX["mouth_smirk"]] = _u(g, 1).item()
    for name in ("iris_rotation_x", "iris_rotation_y"):
        if _u(g, 1).item() < 0.6:
            pose[INDEX[name]] = 2 * _u(g, 1).item() - 1
    for name in ROTATIONS:
        if _u(g, 1).item() < 0.85:
            pose[INDEX[name]] = 2 * _u(g, 1).item() - 1
    if _u(g, 1).item() < 0.3:
        pose[INDEX["body_y"]] = pose[INDEX["head_y"]]
        pose[INDEX["body_z"]] = pose[INDEX["neck_z"]]
    pose[INDEX["breathing"]] = _u(g, 1).item()
    return pose


def face_only(poses: torch.Tensor) -> torch.Tensor:
    """Zero the rotation/breathing parameters (used to find which pixels the face parameters move)."""
    out = poses.clone()
    out[:, INDEX["head_x"]:] = 0
    return out
