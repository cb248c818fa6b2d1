"""The fixed poses the browser renderer's exactness tests and benchmarks render (bundled character)."""
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
