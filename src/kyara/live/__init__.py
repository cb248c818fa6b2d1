"""Live session: the render loop that turns mixed pose input into published frames (no HTTP here)."""
from kyara.live.engine import EncodedFrame, LiveEngine, RollingStat, Subscription, encode_webp

__all__ = ["LiveEngine", "EncodedFrame", "Subscription", "RollingStat", "encode_webp"]
