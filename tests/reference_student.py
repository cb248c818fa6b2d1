"""The student's networks in the official formulation (THA4: 1×1 convs over concatenations), for tests
only: slower than kyara.student's channels-last code, which must equal them."""
from __future__ import annotations

import torch

from kyara.nn.siren import broadcast_pose, upsample2x
from kyara.student import BodyMorpher, FaceMorpher


def face_reference(face: FaceMorpher, face_pose: torch.Tensor) -> torch.Tensor:
    """face_pose (N, 39) → (N, 4, S, S): the Siren's conv layers over cat(position, pose)."""
    n = face_pose.shape[0]
    position = face.position.to(face_pose.dtype).expand(n, -1, -1, -1)
    return face.siren(torch.cat([position, broadcast_pose(face_pose, face.size, face.size)], dim=1))


def body_features_reference(body: BodyMorpher, pose: torch.Tensor) -> torch.Tensor:
    """pose (N, 45) → (N, 7, 512, 512): each level's conv layers over cat(upsample2x(previous), position, pose)."""
    n = pose.shape[0]
    x = None
    for i, ((res, _, _), layers) in enumerate(zip(body.levels, body.siren_layers)):
        position = getattr(body, f"position_{i}").to(pose.dtype).expand(n, -1, -1, -1)
        parts = [position, broadcast_pose(pose, res, res)]
        if x is not None:
            parts.insert(0, upsample2x(x))
        x = torch.cat(parts, dim=1)
        for layer in layers:
            x = layer(x)
    return body.last_linear(x)
