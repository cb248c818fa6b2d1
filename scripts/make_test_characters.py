"""Draw kyara's three long-hair test characters (issue 16 item 3) into benchmarks/characters/<name>.png.

Long hair is where distillation falls short, and the project is judged on characters it never sees, so
these are hard on purpose, each in a different way:

  twin_tails     long twin tails from ties high on the head, hanging beside the arms to the waist, split
                 tips; pink hair, violet eyes, black sailor collar.
  long_straight  very long straight dark hair behind the body, wider than the shoulders, two locks in front
                 of the chest, loose one-pixel strands apart from the mass, a swept side fringe; teal eyes.
  high_ponytail  a high ponytail rising above the crown and falling beside the viewer's-right arm, a ribbon bow
                 with hanging ribbon ends, flyaway strands (an ahoge, strands off the tail and temples);
                 blonde hair, blue eyes, green collar.

Everything is drawn here, from code, with the bundled sample's helpers (scripts/make_sample_character.py:
Catmull-Rom shapes, tapered strokes, the 4× supersampled Canvas and its premultiplied downsample), imported,
not copied. The face, eyes, brows, nose, mouth, neck and uniform are the sample's own functions with other
colours: their layout is the one THA3 closes the eyes and opens the mouth of (docs/benchmarks.md, "Sample
character's closed eyes"), and the head sits in THA3's 128×128 box x∈[192,320), y∈[64,192). Only the hair
(and the hair ornaments) is new. No randomness, fonts or outside images: the same Pillow/numpy give the
same pixels every run (tests/test_test_characters.py checks that). MIT, like the rest of kyara.

Coordinates are in 512-pixel units; y grows downwards; x<256 is the viewer's left (the character's right).

Usage: python scripts/make_test_characters.py [--out-dir DIR] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Callable, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benchmarks" / "characters"
SAMPLE_SCRIPT = ROOT / "scripts" / "make_sample_character.py"


def sample_module() -> ModuleType:
    """A fresh copy of the sample's drawing module. Fresh because each character sets its own palette on
    the module (the sample's draw functions read their colours from module globals)."""
    spec = importlib.util.spec_from_file_location("_kyara_sample_drawing", SAMPLE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Hair(NamedTuple):
    """Hair colours (sRGB) and the colour of the hair ornaments. (A NamedTuple, not a dataclass: the tests
    load this script with importlib, without a sys.modules entry, which dataclasses need.)"""
    base: tuple[int, int, int]
    shade: tuple[int, int, int]
    light: tuple[int, int, int]
    line: tuple[int, int, int]
    deep: tuple[int, int, int]  # the back of the hair, seen between the locks
    ornament: tuple[int, int, int]
    ornament_shade: tuple[int, int, int]


# -- shape helpers on top of the sample's ----------------------------------------------------------------
def swept(s: ModuleType, points, widths, steps: int = 24) -> np.ndarray:
    """Polygon around a Catmull-Rom curve through `points` whose width is `widths[i]` at points[i]
    (linear in between) → (2M, 2) array. A tail or a lock with a width profile."""
    curve = s.spline(points, steps=steps)
    d = np.gradient(curve, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    u = np.minimum(np.arange(len(curve)) / steps, len(points) - 1)
    half = 0.5 * np.interp(u, np.arange(len(points)), np.asarray(widths, dtype=np.float64))[:, None]
    return np.vstack([curve + normal * half, (curve - normal * half)[::-1]])


def offset_curve(s: ModuleType, points, widths, frac: float, t0: float, t1: float, steps: int = 24) -> np.ndarray:
    """The curve at `frac` (-0.5 … 0.5) of the local width across a swept shape, from t0 to t1 of its
    length (fractions) → (M, 2) array. Strand lines and shade bands inside tails."""
    curve = s.spline(points, steps=steps)
    d = np.gradient(curve, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    u = np.minimum(np.arange(len(curve)) / steps, len(points) - 1)
    w = np.interp(u, np.arange(len(points)), np.asarray(widths, dtype=np.float64))[:, None]
    out = curve + normal * w * frac
    i0, i1 = int(t0 * (len(out) - 1)), int(t1 * (len(out) - 1))
    return out[i0:i1 + 1]


def mirror_spec(s: ModuleType, spec):
    """Mirror a (points, widths) pair about x=256."""
    points, widths = spec
    return s.mirror(points), widths


def bow(s: ModuleType, c, cx: float, cy: float, size: float, fill, shade, line, tails: bool = True,
        angle: float = 0.0) -> None:
    """A ribbon bow centred at (cx, cy): two loops, a knot and (optionally) two hanging ends. `size` ≈ the
    half-width of the bow; `angle` (radians) tilts it."""
    ca, sa = np.cos(angle), np.sin(angle)

    def p(x, y):  # bow units (size = 1) → 512 units
        return (cx + size * (x * ca - y * sa), cy + size * (x * sa + y * ca))

    loop_l = [p(0, 0), p(-0.55, -0.55), p(-1.0, -0.35), p(-1.0, 0.3), p(-0.55, 0.4)]
    loop_r = [p(0, 0), p(0.55, -0.55), p(1.0, -0.35), p(1.0, 0.3), p(0.55, 0.4)]
    shapes = [s.spline(loop_l, closed=True), s.spline(loop_r, closed=True)]
    if tails:
        end_l = [p(-0.1, 0.1), p(-0.45, 0.9), p(-0.62, 1.45), p(-0.3, 1.3), p(0.08, 0.2)]
        end_r = [p(0.1, 0.1), p(0.4, 0.85), p(0.5, 1.5), p(0.2, 1.38), p(-0.08, 0.2)]
        shapes = [s.spline(end_l, closed=True), s.spline(end_r, closed=True)] + shapes
    m = c.group(shapes, fill, line, 0.9)
    folds = [[p(-0.15, 0.0), p(-0.6, -0.1), p(-0.85, 0.0)], [p(0.15, 0.0), p(0.6, -0.1), p(0.85, 0.0)]]
    c.strokes([s.spline(f) for f in folds], shade, 2.2 * size / 14, 0.3, clip=m)
    c.group([s.ellipse_pts(*p(0, 0.02), 0.26 * size, 0.3 * size)], fill, line, 0.8)


def hair_group(c, shapes, hair: Hair, line_w: float = 1.3):
    """Fill the union of `shapes` in the hair colour, outlined → the fill mask."""
    return c.group(shapes, hair.base, hair.line, line_w)


def strands_in(s: ModuleType, c, specs, fracs, hair: Hair, mask, t0=0.12, t1=0.92, w=(0.3, 1.0)) -> None:
    """Thin strand lines inside swept shapes (drawn in the line colour, clipped to `mask`)."""
    curves = [offset_curve(s, pts, ws, f, t0, t1) for pts, ws in specs for f in fracs]
    c.strokes(curves, hair.line, w[0], w[1], clip=mask)


def shade_band(s: ModuleType, c, specs, hair: Hair, mask, side: float = 0.28, scale: float = 0.45) -> None:
    """A shade band along one side of each swept shape."""
    bands = []
    for pts, ws in specs:
        core = offset_curve(s, pts, ws, side, 0.0, 1.0)
        n = len(core)
        wprof = np.interp(np.linspace(0, len(ws) - 1, n), np.arange(len(ws)), np.asarray(ws, float)) * scale
        d = np.gradient(core, axis=0)
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
        normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
        bands.append(np.vstack([core + normal * wprof[:, None] / 2, (core - normal * wprof[:, None] / 2)[::-1]]))
    c.polys(bands, hair.shade, clip=mask)


def sheen(s: ModuleType, c, specs, hair: Hair, mask, t: float = 0.18, length: float = 0.12) -> None:
    """Light dashes across each swept shape near its top (the 'angel ring' on tails)."""
    dashes = [s.lens(offset_curve(s, pts, ws, f, t, t + length), 3.2)
              for pts, ws in specs for f in (-0.2, 0.12)]
    c.polys(dashes, hair.light, clip=mask)


def face_and_body(s: ModuleType, c, before_face: Callable[[], None] | None = None) -> None:
    """The sample's body, neck, collar, face, eyes, brows, nose and mouth (its layout; this module's colours).
    `before_face` draws what goes between the collar and the face (hair in front of the body)."""
    s.draw_body(c)
    s.draw_neck(c)
    s.draw_collar(c)
    if before_face is not None:
        before_face()
    s.draw_face(c)
    s.draw_eye(c, s.EYE_X[0], -1)
    s.draw_eye(c, s.EYE_X[1], +1)
    s.draw_brows_nose_mouth(c)


def back_cap(s: ModuleType, c, hair: Hair, bottom: float, side_x: float) -> None:
    """Hair behind the head down to `bottom`, `side_x` = its widest x on the viewer's left."""
    left = [(256, 54), (222, 59), (198, 76), (side_x + 2, 104), (side_x, 140), (side_x + 2, 178),
            (side_x + 8, bottom - 8), (side_x + 20, bottom), (232, bottom - 8), (256, bottom - 12)]
    back = s.spline(left + s.mirror(left[::-1])[1:-1], closed=True)
    m = c.group([back], hair.shade, hair.line, 1.3)
    c.polys([s.spline([(side_x + 14, 120), (side_x + 12, 170), (222, bottom - 6), (256, bottom - 16),
                       (290, bottom - 6), (512 - side_x - 12, 170), (512 - side_x - 14, 120), (256, 110)],
                      closed=True)], hair.deep, clip=m, blur=2.0)


def front_hair(s: ModuleType, c, hair: Hair, bangs, side_locks, extra_shapes=(), ring_y: float = 71.0):
    """The cap over the crown, the bangs and the side locks (each (root, mid, tip, width)), with shade,
    a highlight ring and strand lines. Returns the hair mask."""
    cap = s.spline([(186, 132), (188, 100), (200, 76), (226, 60), (256, 55), (286, 60), (312, 76), (324, 100),
                    (326, 132), (306, 96), (256, 84), (206, 96)], closed=True)
    locks = [s.lock(*b) for b in bangs] + [s.lock(*l) for l in side_locks]
    m = c.group([cap] + locks + list(extra_shapes), hair.base, hair.line, 1.3)
    c.polys([s.lock((x0 + 1.5, y0 + 14), (xm + 1.5, ym + 6), (xt + 0.5, yt - 1), w * 0.45)
             for (x0, y0), (xm, ym), (xt, yt), w in list(bangs) + list(side_locks)], hair.shade, clip=m)
    ring = []
    for x0 in range(204, 306, 17):
        xs = np.linspace(x0, x0 + 13, 12)
        ring.append(s.lens(np.stack([xs, ring_y + 0.0042 * (xs - 256) ** 2], axis=1), 4.2))
    c.polys(ring, hair.light, clip=m)
    strands = [s.spline([(x0 + w * 0.45, y0 + 10), (xm + w * 0.3, ym + 4), (xt, yt)])
               for (x0, y0), (xm, ym), (xt, yt), w in bangs]
    c.strokes(strands, hair.line, 0.2, 1.0, clip=m)
    return m


def loose(s: ModuleType, c, curves, hair: Hair, w0: float = 2.6, w1: float = 0.2) -> None:
    """Loose strands: thin tapered strokes in the hair colour with a dark outline."""
    shapes = [s.tapered(s.spline(pts, steps=24), w0, w1, 1.0) for pts in curves]
    c.group(shapes, hair.base, hair.line, 0.45)


def set_palette(s: ModuleType, colours: dict) -> None:
    for name, value in colours.items():
        if not hasattr(s, name):
            raise AttributeError(f"make_sample_character.py has no colour {name!r}")
        setattr(s, name, value)


# -- (a) twin tails ---------------------------------------------------------------------------------------
TWIN_HAIR = Hair(base=(240, 128, 176), shade=(198, 78, 132), light=(255, 204, 226), line=(92, 24, 60),
                 deep=(160, 56, 104), ornament=(255, 208, 64), ornament_shade=(214, 150, 24))
TWIN_COLOURS = {
    # violet eyes: with green ones (46, 160, 96) THA3 closed one eye of this character to a faint pink
    # smudge (lid line width 0.00 against 0.78 violet; blue also worked: 0.63)
    "IRIS": (150, 70, 200), "IRIS_DARK": (60, 20, 90), "IRIS_LIGHT": (230, 170, 255), "PUPIL": (30, 8, 50),
    "BROW": (120, 40, 80), "COLLAR": (36, 36, 44), "COLLAR_SHADE": (20, 20, 28), "SKIRT": (40, 40, 50),
    "RIBBON": (255, 200, 60), "RIBBON_SHADE": (206, 140, 20), "SHIRT_SHADE": (214, 206, 226),
}
# the viewer's-left tail: (centre-line points, widths); the other tail is its mirror image
TAIL = ([(198, 84), (174, 96), (146, 128), (126, 190), (114, 262), (112, 334), (118, 398)],
        [20, 34, 46, 52, 50, 44, 30])
TAIL_TIPS = [((112, 380), (110, 420), (116, 458), 18), ((124, 382), (130, 424), (140, 462), 16),
             ((104, 372), (98, 402), (98, 432), 12)]


def draw_twin_tails(s: ModuleType) -> np.ndarray:
    set_palette(s, TWIN_COLOURS)
    h = TWIN_HAIR
    c = s.Canvas()
    for flip in (False, True):
        spec = mirror_spec(s, TAIL) if flip else TAIL
        tips = [(*(s.mirror([a, b, t]) if flip else [a, b, t]), w) for a, b, t, w in TAIL_TIPS]
        m = hair_group(c, [swept(s, *spec)] + [s.lock(*t) for t in tips], h)
        shade_band(s, c, [spec], h, m, side=0.3 if not flip else -0.3)
        sheen(s, c, [spec], h, m, t=0.2)
        strands_in(s, c, [spec], (-0.22, 0.05, 0.3), h, m)
        c.strokes([s.spline([a, b, t]) for a, b, t, _ in tips], h.line, 0.3, 0.8, clip=m)
    back_cap(s, c, h, bottom=222, side_x=182)
    face_and_body(s, c)
    bangs = [((212, 88), (206, 110), (208, 132), 20), ((226, 80), (224, 102), (226, 122), 18),
             ((240, 78), (242, 100), (240, 120), 16), ((252, 80), (250, 102), (248, 116), 14),
             ((262, 80), (262, 102), (266, 118), 14), ((274, 78), (276, 100), (274, 121), 16),
             ((288, 82), (290, 104), (288, 124), 18), ((300, 88), (306, 110), (304, 132), 20)]
    side = [((206, 92), (196, 150), (202, 204), 16)]
    side += [(*s.mirror([a, b, t]), w) for a, b, t, w in side]
    front_hair(s, c, h, bangs, side)
    for x in (194, 318):  # the ties
        bow(s, c, x, 86, 15, h.ornament, h.ornament_shade, h.line, tails=False)
    return c.downsample()


# -- (b) very long straight hair, loose strands, a side fringe ----------------------------------------------
LONG_HAIR = Hair(base=(62, 58, 92), shade=(40, 36, 64), light=(128, 136, 190), line=(16, 12, 28),
                 deep=(30, 26, 48), ornament=(236, 236, 244), ornament_shade=(180, 180, 200))
LONG_COLOURS = {
    # teal eyes: with red ones (200, 40, 60) THA3 drew darker closed lids but barely opened the mouth (68
    # mouth pixels changed by > 40 levels for aaa, against 129 teal and 105 for the sample)
    "IRIS": (30, 150, 170), "IRIS_DARK": (10, 60, 80), "IRIS_LIGHT": (150, 230, 240), "PUPIL": (6, 30, 40),
    "BROW": (40, 34, 60), "COLLAR": (120, 24, 40), "COLLAR_SHADE": (80, 14, 26), "SKIRT": (90, 20, 34),
    "RIBBON": (40, 40, 60), "RIBBON_SHADE": (20, 20, 34), "SHIRT": (246, 244, 250),
}


def draw_long_straight(s: ModuleType) -> np.ndarray:
    set_palette(s, LONG_COLOURS)
    h = LONG_HAIR
    c = s.Canvas()
    # the mass behind the body: from the crown, wider than the shoulders, to the bottom edge, ragged ends
    left = [(256, 54), (220, 58), (192, 76), (176, 108), (170, 150), (162, 212), (150, 272), (136, 340),
            (124, 410), (118, 466), (120, 500), (132, 488), (142, 506), (154, 492), (166, 508), (200, 508)]
    mass = s.spline(left + s.mirror(left[::-1])[1:], closed=True)
    m = c.group([mass], h.shade, h.line, 1.3)
    c.polys([s.spline([(184, 120), (176, 220), (160, 330), (150, 460), (256, 470), (362, 460), (352, 330),
                       (336, 220), (328, 120), (256, 100)], closed=True)], h.deep, clip=m, blur=3.0)
    long_lines = [[(172 + k * 6, 130 + k * 8), (156 + k * 5, 260), (136 + k * 4, 380), (128 + k * 4, 480)]
                  for k in range(4)]
    long_lines += [s.mirror(l) for l in long_lines]
    c.strokes([s.spline(l) for l in long_lines], h.line, 0.2, 0.9, clip=m)
    c.polys([s.lens(s.spline([(166, 180), (160, 230), (152, 280)]), 3.4),
             s.lens(s.spline(s.mirror([(166, 180), (160, 230), (152, 280)])), 3.4)], h.light, clip=m)
    # loose strands apart from the mass (thin, with a gap of transparent pixels between them and the hair)
    loose(s, c, [[(150, 250), (126, 320), (108, 400), (100, 470)],
                 [(160, 200), (134, 262), (114, 330)],
                 s.mirror([(148, 270), (128, 340), (116, 420), (112, 488)]),
                 s.mirror([(166, 160), (150, 200), (134, 250), (128, 290)])], h)

    def chest_locks() -> None:  # two long locks in front of the shoulders and chest
        specs = [([(206, 96), (197, 160), (194, 230), (198, 300), (204, 352)], [14, 20, 22, 16, 0]),
                 ([(306, 96), (316, 160), (320, 230), (316, 290), (312, 330)], [14, 20, 22, 14, 0])]
        lm = hair_group(c, [swept(s, *sp) for sp in specs], h)
        shade_band(s, c, specs, h, lm, side=-0.25)
        strands_in(s, c, specs, (-0.15, 0.2), h, lm, t0=0.2)
        loose(s, c, [[(200, 240), (190, 290), (184, 330), (186, 372)],
                     [(318, 250), (326, 300), (330, 350)]], h, w0=2.2)

    face_and_body(s, c, chest_locks)
    # side fringe: parted on the viewer's right, swept to the viewer's left over one brow
    bangs = [((296, 74), (276, 96), (250, 118), 24), ((282, 74), (258, 96), (230, 118), 24),
             ((266, 76), (240, 96), (214, 124), 22), ((250, 78), (226, 96), (206, 120), 18),
             ((304, 80), (300, 100), (302, 122), 14), ((314, 86), (320, 108), (318, 130), 14)]
    side = [((206, 94), (198, 140), (200, 176), 12), ((312, 96), (318, 140), (314, 170), 10)]
    m = front_hair(s, c, h, bangs, side, ring_y=68.0)
    loose(s, c, [[(262, 84), (244, 102), (232, 112), (228, 126)],  # a stray strand over the forehead
                 [(214, 96), (204, 120), (200, 150), (204, 170)]], h, w0=2.0)
    c.group([s.ellipse_pts(298, 78, 4.5, 4.5), s.ellipse_pts(306, 82, 4.5, 4.5)], h.ornament, h.line, 0.7)
    return c.downsample()


# -- (c) a high ponytail with a ribbon bow and flyaway strands ---------------------------------------------
PONY_HAIR = Hair(base=(248, 196, 96), shade=(214, 142, 58), light=(255, 236, 170), line=(112, 62, 24),
                 deep=(186, 116, 44), ornament=(222, 44, 78), ornament_shade=(150, 20, 50))
PONY_COLOURS = {
    "IRIS": (48, 112, 210), "IRIS_DARK": (16, 36, 96), "IRIS_LIGHT": (140, 214, 255), "PUPIL": (10, 18, 56),
    "BROW": (150, 92, 40), "COLLAR": (34, 104, 86), "COLLAR_SHADE": (20, 70, 56), "SKIRT": (34, 90, 76),
    "RIBBON": (222, 44, 78), "RIBBON_SHADE": (150, 20, 50),
}
# the arc's top edge at y≈30: higher, THA3's neck tilt pushed it against the canvas's top edge and cut it flat
PONY = ([(296, 60), (320, 48), (348, 46), (374, 66), (388, 110), (394, 170), (396, 240), (392, 300)],
        [22, 30, 40, 50, 56, 54, 46, 30])
PONY_TIPS = [((386, 286), (386, 326), (392, 358), 20), ((398, 284), (406, 320), (414, 346), 16),
             ((378, 280), (372, 310), (370, 336), 12)]


def draw_high_ponytail(s: ModuleType) -> np.ndarray:
    set_palette(s, PONY_COLOURS)
    h = PONY_HAIR
    c = s.Canvas()
    m = hair_group(c, [swept(s, *PONY)] + [s.lock(*t) for t in PONY_TIPS], h)
    shade_band(s, c, [PONY], h, m, side=-0.3)
    sheen(s, c, [PONY], h, m, t=0.3)
    strands_in(s, c, [PONY], (-0.25, 0.0, 0.25), h, m, t0=0.05)
    c.strokes([s.spline([a, b, t]) for a, b, t, _ in PONY_TIPS], h.line, 0.3, 0.8, clip=m)
    loose(s, c, [[(412, 150), (430, 200), (436, 250)], [(404, 250), (424, 300), (430, 330)],
                 [(380, 60), (400, 70), (416, 92)]], h)
    back_cap(s, c, h, bottom=196, side_x=184)
    face_and_body(s, c)
    bangs = [((214, 86), (206, 106), (212, 126), 18), ((228, 80), (222, 100), (230, 116), 16),
             ((242, 78), (240, 98), (246, 114), 14), ((258, 78), (262, 98), (260, 112), 12),
             ((272, 78), (276, 98), (270, 116), 14), ((286, 80), (294, 100), (286, 120), 16),
             ((298, 86), (308, 106), (302, 128), 18)]
    side = [((206, 92), (194, 150), (198, 212), 12), ((306, 92), (318, 150), (314, 212), 12)]
    front_hair(s, c, h, bangs, side, ring_y=70.0)
    loose(s, c, [[(252, 58), (246, 38), (256, 22), (270, 28)],  # the ahoge
                 [(194, 110), (180, 130), (174, 160)], [(318, 112), (334, 136), (338, 166)]], h, w0=3.0)
    bow(s, c, 298, 58, 24, h.ornament, h.ornament_shade, h.line, tails=True, angle=-0.25)
    return c.downsample()


CHARACTERS: dict[str, Callable[[ModuleType], np.ndarray]] = {
    "twin_tails": draw_twin_tails,
    "long_straight": draw_long_straight,
    "high_ponytail": draw_high_ponytail,
}


def render(name: str) -> np.ndarray:
    """Draw one test character → (512, 512, 4) uint8 straight sRGB RGBA, transparent background."""
    if name not in CHARACTERS:
        raise ValueError(f"unknown test character {name!r}; choose one of: {', '.join(CHARACTERS)}")
    return CHARACTERS[name](sample_module())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help=f"output folder (default: {OUT_DIR})")
    parser.add_argument("--only", nargs="+", choices=list(CHARACTERS), help="draw only these characters")
    args = parser.parse_args(argv)
    from kyara.image import save_image  # the project's one PNG writer (atomic)

    for name in args.only or CHARACTERS:
        path = save_image(render(name), args.out_dir / f"{name}.png")
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
