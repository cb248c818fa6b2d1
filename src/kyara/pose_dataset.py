"""The official THA4 pose dataset (``pose_dataset.pt``) as a distillation pose sampler.

The official distiller reads ``data/pose_dataset.pt`` (downloaded by hand from the THA4 release; not
bundled) with ``torch.load`` and wraps it in a ``TensorDataset``: the file holds a tensor, or a tuple/list
of tensors whose first one is the poses; item[0] of each example is one 45-value pose
(T4:src/tha4/shion/base/dataset/lazy_tensor_dataset.py, dataset/image_poses_and_aother_images_dataset.py).
Per the THA4 supplementary, the poses were sampled uniformly from the full system's training set.

kyara reads it with ``torch.load(weights_only=True)`` (tensors only, never pickled code), checks it is
(N, 45), finite, and every value within its parameter's range (kyara.pose), and draws training poses
from it uniformly with replacement (``PoseDataset.sample``). docs/distill.md compares it with
kyara's own sampler (kyara.pose_sampler).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kyara.errors import KyaraError
from kyara.pose import HIGH, LOW, NUM_PARAMETERS, PARAMETERS

# Values this far outside a parameter's range are float rounding, clamped; anything further is refused.
RANGE_TOLERANCE = 1e-5


class PoseDatasetError(KyaraError):
    """A pose dataset file cannot be used; the message names the file and the problem, on one line."""


@dataclass(frozen=True)
class PoseDataset:
    path: Path
    poses: torch.Tensor   # (N, 45) float32, every value within its parameter's range

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, 45) float32 poses drawn uniformly with replacement (a pure function of the generator)."""
        return self.poses[torch.randint(len(self.poses), (n,), generator=generator)]


def load_pose_dataset(path: str | Path) -> PoseDataset:
    """Read and validate a pose dataset file; PoseDatasetError on any problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PoseDatasetError(f"{path}: pose dataset file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PoseDatasetError(f"{path}: not a readable PyTorch tensor file ({why_unreadable(e)})") from None
    if isinstance(data, (tuple, list)) and data:
        data = data[0]          # as the official TensorDataset(*data): item[0] is the pose
    if not isinstance(data, torch.Tensor):
        raise PoseDatasetError(f"{path}: expected a tensor of poses (or a tuple/list whose first item is one), "
                               f"found {type(data).__name__}")
    if data.ndim != 2 or data.shape[1] != NUM_PARAMETERS or data.shape[0] == 0:
        raise PoseDatasetError(f"{path}: poses must have shape (N, {NUM_PARAMETERS}) with N ≥ 1, got {tuple(data.shape)}")
    if not data.is_floating_point():
        raise PoseDatasetError(f"{path}: poses must be floating point, got {data.dtype}")
    poses = data.float()
    bad = ~torch.isfinite(poses)
    if bad.any():
        row, col = (int(i) for i in torch.nonzero(bad)[0])
        raise PoseDatasetError(f"{path}: pose {row} has a non-finite {PARAMETERS[col].name} ({float(poses[row, col])}); "
                               f"{int(bad.any(dim=1).sum())} poses affected")
    low = torch.from_numpy(LOW).float()
    high = torch.from_numpy(HIGH).float()
    outside = (poses < low - RANGE_TOLERANCE) | (poses > high + RANGE_TOLERANCE)
    if outside.any():
        row, col = (int(i) for i in torch.nonzero(outside)[0])
        p = PARAMETERS[col]
        raise PoseDatasetError(f"{path}: pose {row} has {p.name} = {float(poses[row, col]):.6g}, outside its range "
                               f"[{p.low:g}, {p.high:g}]; {int(outside.any(dim=1).sum())} poses affected")
    return PoseDataset(path, poses.clamp(low, high).contiguous())


def why_unreadable(error: BaseException) -> str:
    """Why torch.load(weights_only=True) refused the file, in a few words of our own: torch's message
    advises re-running with weights_only=False (unpickling code from the file), never pass that on."""
    if "Unsupported global" in str(error):
        return "it holds pickled Python objects, not only tensors; kyara never unpickles code"
    if isinstance(error, EOFError):
        return "the file is empty or truncated"
    return "corrupt, truncated, or not a file written by torch.save"


def pose_sampler(path: str | Path | None):
    """The distiller's pose sampler, (n, generator) → (n, 45): kyara.pose_sampler.sample_poses when path
    is empty, else uniform draws from the pose dataset file at path (loaded and validated now)."""
    from kyara.pose_sampler import sample_poses

    return load_pose_dataset(path).sample if path else sample_poses
