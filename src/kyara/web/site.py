"""`kyara web`: a self-contained static folder that renders one student character in the browser
(WebGPU or WebGL2) with sliders, presets and idle motion, and no server at all.

file:// pages cannot fetch sibling files, so everything the page reads is a classic script:
  index.html          the page (server/static/render/site.html)
  character.js        self.kyaraSite = {name, parameters: [{name, low, high}], presets: {name: {param: value}},
                      shapes: {tensor: shape}}
  weights.js          self.kyaraWeights = base64 of the .kyw weights (kyara.web.weights)
  student_wgsl.js     self.kyaraWGSL = the WGSL source (server/static/render/student.wgsl)
  render/*.js         the renderer (copied from server/static/render)
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

from kyara.image import atomic_write_bytes
from kyara.pose import PARAMETERS, PRESETS
from kyara.web.weights import student_tensors, student_to_web_bytes

RENDER_DIR = Path(__file__).resolve().parent.parent / "server" / "static" / "render"
RENDER_SCRIPTS = ("kyw.js", "plan.js", "student_webgl2.js", "student_webgpu.js", "renderer.js", "site.js")


def _script(variable: str, value) -> bytes:
    return f"self.{variable} = {json.dumps(value, separators=(',', ':'))};\n".encode()


def build_site(character, out_dir: str | Path, weights_dtype: str = "float16") -> list[Path]:
    """Write the site for a student character into out_dir (created; files we write are replaced
    atomically, nothing else is touched). Returns the written paths; open out_dir/index.html."""
    out = Path(out_dir)
    (out / "render").mkdir(parents=True, exist_ok=True)
    kyw = student_to_web_bytes(character, weights_dtype)
    site = {"name": character.name,
            "parameters": [{"name": p.name, "low": p.low, "high": p.high} for p in PARAMETERS],
            "presets": {name: dict(preset.values) for name, preset in PRESETS.items()},
            # the page checks the embedded weights against these (a cut or altered weights.js is refused)
            "shapes": {**{k: list(v.shape) for k, v in student_tensors(character).items()},
                       "character_image": [512, 512, 4]}}
    files = {
        out / "index.html": (RENDER_DIR / "site.html").read_bytes(),
        out / "character.js": _script("kyaraSite", site),
        out / "weights.js": b"self.kyaraWeights = '" + base64.b64encode(kyw) + b"';\n",
        out / "student_wgsl.js": _script("kyaraWGSL", (RENDER_DIR / "student.wgsl").read_text()),
    }
    for name in RENDER_SCRIPTS:
        files[out / "render" / name] = (RENDER_DIR / name).read_bytes()
    for path, data in files.items():
        atomic_write_bytes(path, data)
    return list(files)
