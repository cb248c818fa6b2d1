"""Frames → files: video/animation writers (``video``) and multi-character compositing (``composite``).

No pose-source or model knowledge lives here; frames are (H, W, 4) uint8 sRGB straight RGBA.
"""
from kyara.render.video import VideoError, open_writer  # noqa: F401
