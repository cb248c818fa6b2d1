"""Pose sources: turn outside input (face trackers, sliders, idle motion, events) into pose values.

Pure parsers/mappers (arkit, osc, parse_ifacialmocap_v2, VmcState) are separate from the socket
receivers (IFacialMocapReceiver, VmcReceiver). Nothing here touches a model or images, and
nothing opens a socket or starts a thread until a receiver's start() is called.
See docs/drive.md.
"""
from kyara.drive.arkit import (ARKIT_BLENDSHAPES, ArkitFrame, ArkitMapping, Calibration,  # noqa: F401
                               arkit_to_pose_values, calibrate)
from kyara.drive.events import EVENTS, Clip, EventPlayer, UnknownEventError  # noqa: F401
from kyara.drive.idle import IdleConfig, IdleMotion  # noqa: F401
from kyara.drive.ifacialmocap import IFacialMocapReceiver, parse_ifacialmocap_v2  # noqa: F401
from kyara.drive.mixer import MixerConfig, PoseMixer, SmoothingConfig  # noqa: F401
from kyara.drive.smoothing import OneEuroFilter  # noqa: F401
from kyara.drive.source import PoseSource, ProtocolError, SourceSample  # noqa: F401
from kyara.drive.vmc import VmcReceiver, VmcState  # noqa: F401

__all__ = [
    "ARKIT_BLENDSHAPES", "ArkitFrame", "ArkitMapping", "Calibration", "arkit_to_pose_values", "calibrate",
    "EVENTS", "Clip", "EventPlayer", "UnknownEventError", "IdleConfig", "IdleMotion",
    "IFacialMocapReceiver", "parse_ifacialmocap_v2", "MixerConfig", "PoseMixer", "SmoothingConfig",
    "OneEuroFilter", "PoseSource", "ProtocolError", "SourceSample", "VmcReceiver", "VmcState",
]
