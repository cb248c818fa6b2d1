"""The fixed poses (and a tiny student) the browser renderer's exactness tests and benchmarks use."""
from __future__ import annotations

import numpy as np

from kyara.pose import HIGH, INDEX, LOW, PRESETS, Pose


def exactness_poses(count: int = 20, seed: int = 14) -> np.ndarray:
    """(count, 45) float32: the rest pose, the presets with a head/body turn, then seeded uniform
    random poses over every parameter's full range (the hardest case for the sine layers)."""
    poses = [Pose().vector]
    turns = np.linspace(-0.8, 0.8, len(PRESETS))
    for name, turn in zip(PRESETS, turns):
        v = Pose.preset(name).vector.copy()
        v[INDEX["head_x"]] = turn
        v[INDEX["body_y"]] = -turn / 2
        poses.append(v)
    rng = np.random.default_rng(seed)
    while len(poses) < count:
        poses.append(rng.uniform(LOW, HIGH).astype(np.float32))
    return np.stack(poses[:count]).astype(np.float32)


def tiny_character(seed: int = 0):
    """A randomly initialised small student (face 2 × 16 wide, body levels 16/8/8 wide, 2 layers each)
    on the bundled image and region: the same passes as the real student at ~1 % of the work, so
    exactness tests of the shaders run in seconds on a software GPU."""
    import torch

    from kyara.character import SAMPLE_CHARACTER, Character, load_character
    from kyara.student import BodyMorpher, FaceMorpher, Student

    sample = load_character(SAMPLE_CHARACTER)
    torch.manual_seed(seed)
    student = Student(FaceMorpher(hidden=16, num_layers=2),
                      BodyMorpher(levels=((128, 16, 8), (256, 8, 8), (512, 8, 8)), layers_per_level=2),
                      region=sample.poser.region)
    with torch.no_grad():   # gentle flows: He-initialised heads would warp by whole image widths
        student.body_morpher.last_linear.weight.mul_(0.05)
    return Character("tiny", sample.image, student.eval(), "none")
