"""Fast stand-ins for a character and a pose mixer, for live engine, server and browser tests.

FakeCharacter draws pose-dependent content into known regions of a 512×512 RGBA frame:
  MOUTH_BOX: a dark bar whose height grows with mouth_aaa (rows 300..300+40*mouth_aaa)
  HEAD_BOX:  a block shifted right by 60 * head_y pixels
  EYES_BOX:  two dark bars whose heights grow with eye_wink_left / eye_wink_right (20 px at 1)
  everything outside the body ellipse stays fully transparent (alpha 0).
FakeMixer implements the PoseMixer methods the engine calls, recording calls.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from kyara.pose import Pose

MOUTH_BOX = (290, 350, 216, 296)   # top, bottom, left, right
HEAD_BOX = (120, 200, 150, 362)
EYES_BOX = (220, 250, 196, 316)    # between the head block and the mouth
CORNER_BOX = (0, 40, 0, 40)        # always transparent


class FakeCharacter:
    name = "fake"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.renders = 0
        yy, xx = np.mgrid[:512, :512]
        self._body = ((xx - 256) / 180.0) ** 2 + ((yy - 300) / 220.0) ** 2 < 1.0

    def render_rgba(self, pose: Pose) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.renders += 1
        rgba = np.zeros((512, 512, 4), np.uint8)
        rgba[self._body] = (240, 210, 190, 255)
        t, b, l, r = MOUTH_BOX
        rgba[t:b, l:r] = (240, 210, 190, 255)
        height = int(round(40 * pose["mouth_aaa"]))
        if height:
            rgba[t + 10:t + 10 + height, l + 10:r - 10] = (90, 20, 30, 255)
        t, b, l, r = EYES_BOX
        for side, (el, er) in (("left", (l, l + 40)), ("right", (r - 40, r))):
            h = int(round(20 * pose[f"eye_wink_{side}"]))
            if h:
                rgba[t + 5:t + 5 + h, el:er] = (30, 20, 40, 255)
        t, b, l, r = HEAD_BOX
        shift = int(round(60 * pose["head_y"]))
        rgba[t:b, l + 40 + shift:l + 100 + shift] = (40, 60, 160, 255)
        return rgba


class FakeMixer:
    """Manual values layered over a preset; records events and calibrations; idle is inert."""

    def __init__(self) -> None:
        self.idle = {"blink": True, "breathing": True, "sway": True}
        self.on_input = None
        self.manual: dict[str, float] = {}
        self.preset: tuple[str, float] | None = None
        self.events: list[str] = []
        self.calibrations = 0
        self._lock = threading.Lock()

    def set_manual(self, values: dict) -> None:
        Pose.from_dict(values)  # validates like the real mixer
        with self._lock:
            self.manual = {**self.manual, **values}

    def reset_manual(self) -> None:
        with self._lock:
            self.manual = {}

    def set_idle(self, toggles: dict) -> dict:
        self.idle.update({k: bool(v) for k, v in toggles.items()})
        return dict(self.idle)

    def idle_state(self) -> dict:
        return dict(self.idle)

    def set_preset(self, name: str, intensity: float) -> None:
        self.preset = (name, intensity)

    def calibrate(self) -> list[str]:
        self.calibrations += 1
        return []

    def trigger(self, event_name: str, now: float) -> None:
        self.events.append(event_name)

    def mix(self, now: float, since: float | None = None) -> Pose:
        with self._lock:
            base = Pose.preset(*self.preset) if self.preset else Pose()
            return base.replace(**self.manual) if self.manual else base

    def sources(self, now: float | None = None) -> list:
        return [("fake_tracker", {"packets_ok": 3, "packets_dropped": 1}, False)]


def region_changed(before: np.ndarray, after: np.ndarray, box) -> float:
    """Fraction of pixels inside box (top, bottom, left, right) that differ between two RGBA arrays."""
    t, b, l, r = box
    return float(np.mean(np.any(before[t:b, l:r] != after[t:b, l:r], axis=-1)))
