"""Offline jobs: a timed pose track → frames → files.

- ``kyara.produce.speak.speak``: audio or text → talking video
- ``kyara.produce.stickers.make_stickers``: expression sticker pack
- ``kyara.produce.scene.render_scene``: several characters from a scene file → one video
- ``kyara.produce.frames``: pose-track quantization and the render-each-distinct-pose-once cache
- ``kyara.produce.motion``: emotion timeline and voice-driven head motion layers

Import the submodules directly; importing kyara.produce loads no model and no audio stack.
"""
