"""Shared fakes for the produce tests: a tiny pose-dependent character and WAV helpers.

FakeCharacter renders (N, 4, S, S) model-space images whose pixels encode the pose, so tests can
read the pose back from a frame: a disc whose red channel is mouth openness, green is eye closure and
whose horizontal position follows head_y. It counts render calls and rendered poses.
"""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch

from kyara.image import unit_to_signed
from kyara.pose import INDEX

MOUTH = [INDEX[n] for n in ("mouth_aaa", "mouth_iii", "mouth_uuu", "mouth_eee", "mouth_ooo")]
EYES = [INDEX[n] for n in ("eye_wink_left", "eye_wink_right")]


class FakeCharacter:
    def __init__(self, name: str = "fake", size: int = 64) -> None:
        self.name = name
        self.size = size
        self.render_calls = 0
        self.rendered_poses = 0

    def render(self, poses: torch.Tensor) -> torch.Tensor:
        """poses (N, 45) → (N, 4, S, S) float32 model space."""
        assert poses.ndim == 2 and poses.shape[1] == 45 and poses.dtype == torch.float32
        self.render_calls += 1
        self.rendered_poses += len(poses)
        n, s = len(poses), self.size
        yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")
        unit = torch.zeros(n, 4, s, s)
        for i, p in enumerate(poses):
            cx = s / 2 + p[INDEX["head_y"]].item() * s / 4
            inside = ((xx - cx) ** 2 + (yy - s / 2) ** 2) < (s / 3) ** 2
            unit[i, 0] = p[MOUTH].max().item()
            unit[i, 1] = p[EYES].max().item()
            unit[i, 2] = 0.5
            unit[i, 3] = inside.float()
        return unit_to_signed(unit)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Mono float samples in [-1, 1] → 16-bit PCM WAV."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def vowel_like(seconds: float, sample_rate: int, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A buzzy voiced signal with syllable-like loudness bursts (4 per second)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    voice = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) ** 0.5
    rng = np.random.default_rng(seed)
    return (0.25 * voice / 3.0 * envelope + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


def test_fake_character_encodes_the_pose():
    ch = FakeCharacter(size=32)
    poses = torch.zeros(2, 45)
    poses[1, INDEX["mouth_aaa"]] = 1.0
    out = ch.render(poses)
    assert out.shape == (2, 4, 32, 32)
    assert out[0, 0].max() == -1.0 and out[1, 0].max() == 1.0
