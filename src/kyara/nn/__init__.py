"""Neural-network building blocks with no THA knowledge: conv blocks and backbones (``blocks``),
appearance flow and alpha blending (``warp``)."""
