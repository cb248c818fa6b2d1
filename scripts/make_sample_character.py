"""Draw kyara's bundled sample character ("Kyara-chan") and write src/kyara/data/sample_character.png.

The picture is made entirely here, from code: filled Catmull-Rom shapes and tapered strokes drawn with
Pillow's ImageDraw at 4× size (2048×2048), then box-averaged (premultiplied) down to 512×512, which
anti-aliases every edge. No randomness, no fonts, no outside images: the same Pillow/numpy give the same
pixels every run (tests/test_sample_character.py checks that).

Layout follows the THA3 input rules (tha3-tha4-facts.md §2): 512×512 RGBA, transparent background,
one upright character facing the viewer, head inside the 128×128 box x∈[192,320), y∈[64,192), arms
down and away from the head.

All coordinates below are in 512-pixel units; y grows downwards; x<256 is the viewer's left, which is
the character's RIGHT side.

Usage: python scripts/make_sample_character.py [--out PATH]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 512
SCALE = 4  # supersampling factor: draw at 2048, average 4×4 blocks
OUT = Path(__file__).resolve().parents[1] / "src" / "kyara" / "data" / "sample_character.png"

# -- palette (sRGB) ------------------------------------------------------------------------------------
SKIN = (255, 238, 226)  # a touch paler than (255, 233, 220): THA3 paints closed lids a little lighter than skin
SKIN_SHADE = (243, 194, 180)
SKIN_LINE = (128, 72, 64)
BLUSH = (255, 140, 150)
HAIR = (86, 112, 178)
HAIR_SHADE = (52, 70, 128)
HAIR_LIGHT = (150, 182, 232)
HAIR_LINE = (28, 32, 64)
LASH = (38, 24, 34)
SCLERA = (255, 255, 255)
SCLERA_SHADE = (214, 220, 238)
IRIS = (200, 110, 36)
IRIS_DARK = (70, 30, 20)
IRIS_LIGHT = (255, 206, 96)
PUPIL = (40, 14, 8)
BROW = (56, 44, 70)
MOUTH = (150, 60, 62)
SHIRT = (250, 250, 252)
SHIRT_SHADE = (198, 206, 230)
CLOTH_LINE = (46, 48, 72)
COLLAR = (38, 54, 104)
COLLAR_SHADE = (26, 36, 74)
RIBBON = (212, 38, 56)
RIBBON_SHADE = (146, 20, 40)
SKIRT = (46, 58, 102)


# -- geometry helpers (512 units in, numpy float arrays out) -----------------------------------------
def spline(points, closed: bool = False, steps: int = 16) -> np.ndarray:
    """Centripetal-free (uniform) Catmull-Rom curve through `points` → (M, 2) float array."""
    p = np.asarray(points, dtype=np.float64)
    if closed:
        ext = np.vstack([p[-1:], p, p[:2]])
        n_seg = len(p)
    else:
        ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
        n_seg = len(p) - 1
    t = np.linspace(0.0, 1.0, steps, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    out = []
    for i in range(n_seg):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    if not closed:
        out.append(p[-1:])
    return np.vstack(out)


def mirror(points) -> list[tuple[float, float]]:
    """Reflect points about the vertical centre line x=256 (keeps order)."""
    return [(SIZE - x, y) for x, y in points]


def tapered(curve: np.ndarray, w0: float, w1: float, power: float = 1.0) -> np.ndarray:
    """Polygon around a polyline whose width goes from w0 (start) to w1 (end) → (2M, 2) array."""
    d = np.gradient(curve, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    t = np.linspace(0.0, 1.0, len(curve))[:, None] ** power
    half = 0.5 * (w0 + (w1 - w0) * t)
    return np.vstack([curve + normal * half, (curve - normal * half)[::-1]])


def lens(curve: np.ndarray, width: float) -> np.ndarray:
    """Polygon around a polyline that is `width` wide in the middle and pointed at both ends."""
    d = np.gradient(curve, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    half = 0.5 * width * np.sin(np.linspace(0.0, np.pi, len(curve)))[:, None]
    return np.vstack([curve + normal * half, (curve - normal * half)[::-1]])


def lock(root, mid, tip, width: float, power: float = 1.3) -> np.ndarray:
    """One hair lock: a curved blade from a wide root to a sharp tip."""
    return tapered(spline([root, mid, tip], steps=24), width, 0.0, power)


def ellipse_pts(cx, cy, rx, ry, n: int = 96) -> np.ndarray:
    a = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


# -- drawing on the supersampled canvas ----------------------------------------------------------------
class Canvas:
    """A 2048×2048 RGBA image addressed in 512 units."""

    def __init__(self) -> None:
        self.image = Image.new("RGBA", (SIZE * SCALE, SIZE * SCALE), (0, 0, 0, 0))

    @staticmethod
    def _xy(points) -> list[tuple[float, float]]:
        return [(float(x) * SCALE, float(y) * SCALE) for x, y in np.asarray(points, dtype=np.float64)]

    def layer(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        img = Image.new("RGBA", self.image.size, (0, 0, 0, 0))
        return img, ImageDraw.Draw(img)

    def mask(self, shapes) -> Image.Image:
        """'L' mask: union of polygons."""
        m = Image.new("L", self.image.size, 0)
        d = ImageDraw.Draw(m)
        for s in shapes:
            d.polygon(self._xy(s), fill=255)
        return m

    def put(self, layer: Image.Image, clip: Image.Image | None = None) -> None:
        """Composite a layer over the canvas, optionally only where `clip` (an 'L' mask) is set.
        Only the layer's bounding box is touched (keeps a full render around a second)."""
        box = layer.getbbox()
        if box is None:
            return
        part = layer.crop(box)
        if clip is not None:
            a = np.asarray(part, dtype=np.uint16).copy()
            a[:, :, 3] = a[:, :, 3] * np.asarray(clip.crop(box), dtype=np.uint16) // 255
            part = Image.fromarray(a.astype(np.uint8), "RGBA")
        self.image.alpha_composite(part, dest=box[:2])

    def group(self, shapes, fill, line, line_w: float, clip=None) -> Image.Image:
        """Fill the union of `shapes` and outline only the union's silhouette (line_w units wide,
        half outside). Returns the fill mask for clipping details."""
        img, d = self.layer()
        w = max(1, round(line_w * 2 * SCALE))
        for s in shapes:  # pass 1: every shape fattened in the line colour
            xy = self._xy(s)
            d.polygon(xy, fill=line)
            d.line(xy + xy[:1], fill=line, width=w, joint="curve")
            for x, y in (xy[0],):
                r = w / 2
                d.ellipse([x - r, y - r, x + r, y + r], fill=line)
        for s in shapes:  # pass 2: fills on top leave only the outer outline
            d.polygon(self._xy(s), fill=fill)
        self.put(img, clip)
        return self.mask(shapes)

    def polys(self, shapes, fill, clip=None, blur: float = 0.0) -> None:
        img, d = self.layer()
        for s in shapes:
            d.polygon(self._xy(s), fill=fill)
        if blur:  # blur only the drawn region (a full-canvas blur costs seconds)
            x0, y0, x1, y1 = img.getbbox()
            pad = int(3 * blur * SCALE) + 2
            box = (max(0, x0 - pad), max(0, y0 - pad), min(img.width, x1 + pad), min(img.height, y1 + pad))
            part = img.crop(box).filter(ImageFilter.GaussianBlur(blur * SCALE))
            img = Image.new("RGBA", img.size, (0, 0, 0, 0))
            img.paste(part, box[:2])
        self.put(img, clip)

    def strokes(self, curves, fill, w0: float, w1: float, clip=None, power: float = 1.0) -> None:
        """Tapered strokes along curves (w0 → w1 units wide)."""
        self.polys([tapered(np.asarray(c, dtype=np.float64), w0, w1, power) for c in curves], fill, clip)

    def lines(self, curves, fill, width: float, clip=None) -> None:
        img, d = self.layer()
        w = max(1, round(width * SCALE))
        for c in curves:
            xy = self._xy(c)
            d.line(xy, fill=fill, width=w, joint="curve")
            for x, y in (xy[0], xy[-1]):
                r = w / 2
                d.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        self.put(img, clip)

    def downsample(self) -> np.ndarray:
        """Premultiplied 4×4 box average → (512, 512, 4) uint8 straight RGBA."""
        a = np.asarray(self.image, dtype=np.float64) / 255.0
        a[:, :, :3] *= a[:, :, 3:4]
        a = a.reshape(SIZE, SCALE, SIZE, SCALE, 4).mean(axis=(1, 3))
        alpha = a[:, :, 3:4]
        rgb = np.where(alpha > 0, a[:, :, :3] / np.maximum(alpha, 1e-12), 0.0)
        out = np.concatenate([rgb, alpha], axis=2)
        out = np.rint(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)
        out[out[:, :, 3] == 0] = 0  # fully transparent pixels are (0,0,0,0), as THA3 expects
        return out


# -- the character, back to front -----------------------------------------------------------------------
FACE = [(256, 84), (298, 96), (301, 128), (297, 152), (286, 170), (270, 184), (256, 189),
        (242, 184), (226, 170), (215, 152), (211, 128), (214, 96)]
# Eye placement matters more than anything else for closing the eyes (issue 12, docs/benchmarks.md): THA3's
# face morpher paints the closed lid where its training faces have their eyes. With the eye centres at
# y=139, x=234/278 (the first design) it only smeared skin colour over the eyes; at y=152, x=237/275 it
# draws a lid line ('^' arcs for the happy wink). Moving x by 2 px outwards or y by 2 px already hurts.
# But THA3's mouth morpher wants the eyes high: with the eyes at y=152 `mouth_aaa` = 1 barely moved the
# mouth (teacher: ~0-60 pixels changed by > 40 levels, against 178 for the first design); at y=145 it opens
# the mouth (111 pixels) and still draws the lid lines of happy/sleepy. y=145 is the compromise.
EYE_Y = 145.0
EYE_X = (237.0, 275.0)  # viewer's left (character's right), viewer's right (character's left)
BROW_DY = 1.0    # brows follow the eyes down a little (they stay half under the bangs)
LOWER_DY = 2.0   # nose and blush follow the eyes down (keeps the blush below the closed lids)
MOUTH_DY = 2.0   # the mouth: THA3 opens it only near where its training faces have theirs


def draw_back_hair(c: Canvas) -> None:
    left = [(256, 55), (222, 60), (198, 76), (186, 104), (182, 140), (182, 178), (186, 210),
            (190, 236), (200, 226), (208, 240), (218, 224)]
    back = spline(left + [(238, 214), (256, 212), (274, 214)] + mirror(left[::-1])[:-1], closed=True)
    m = c.group([back], HAIR_SHADE, HAIR_LINE, 1.3)
    # darker inner band so the back reads as being behind the face
    c.polys([spline([(198, 120), (196, 170), (208, 214), (256, 206), (304, 214), (316, 170), (314, 120),
                     (256, 110)], closed=True)], (40, 54, 104), clip=m, blur=2.0)


ARM = [(186, 226), (172, 240), (165, 272), (160, 340), (156, 404), (152, 466), (188, 468), (192, 404),
       (196, 340), (200, 280)]  # viewer's left sleeve, clockwise from the shoulder seam
HAND = [(155, 466), (151, 486), (156, 504), (170, 510), (183, 503), (187, 484), (185, 466)]


def draw_body(c: Canvas) -> None:
    """Sailor-uniform top with a waist, separate sleeves and hands, a skirt at the bottom edge."""
    left = [(244, 206), (226, 212), (206, 218), (190, 226), (196, 260), (200, 320), (203, 400), (202, 470),
            (198, 520)]
    torso = spline(left + mirror(left[::-1]), closed=False)
    m = c.group([torso], SHIRT, CLOTH_LINE, 1.2)
    c.polys([spline([(286, 286), (306, 270), (308, 340), (306, 470), (286, 470), (292, 400), (292, 330)],
                    closed=True)], SHIRT_SHADE, clip=m)
    c.lines([spline([(230, 330), (236, 380)]), spline([(284, 350), (280, 410)])], SHIRT_SHADE, 1.3, clip=m)
    skirt = spline([(200, 466), (256, 472), (312, 466), (318, 520), (194, 520)], closed=True)
    sm = c.group([skirt], SKIRT, CLOTH_LINE, 1.0)
    c.lines([spline([(x, 476), (x - (256 - x) * 0.08, 520)]) for x in (222, 244, 268, 290)],
            COLLAR_SHADE, 1.0, clip=sm)
    for flip in (False, True):
        arm, hand = (mirror(ARM), mirror(HAND)) if flip else (ARM, HAND)
        hm = c.group([spline(hand, closed=True)], SKIN, SKIN_LINE, 0.9)
        c.lines([spline(mirror([(162, 486), (166, 500)]) if flip else [(162, 486), (166, 500)])],
                SKIN_SHADE, 1.0, clip=hm)
        am = c.group([spline(arm, closed=True)], SHIRT, CLOTH_LINE, 1.1)
        inner = [(196, 300), (194, 340), (190, 404), (186, 468), (176, 468), (180, 404), (184, 340), (190, 300)]
        c.polys([spline(mirror(inner) if flip else inner, closed=True)], SHIRT_SHADE, clip=am)
        cuff = [(152, 452), (189, 454), (188, 470), (151, 468)]
        c.group([np.asarray(mirror(cuff) if flip else cuff, dtype=np.float64)], COLLAR, CLOTH_LINE, 0.9)
        fold = [[(170, 330), (176, 352)], [(166, 410), (172, 430)]]
        c.lines([spline(mirror(f) if flip else f) for f in fold], SHIRT_SHADE, 1.2, clip=am)


def draw_neck(c: Canvas) -> None:
    """Neck and the skin inside the collar's V as one shape, so no line crosses the throat."""
    neck = spline([(244, 168), (268, 168), (269, 200), (276, 212), (264, 244), (256, 262), (248, 244),
                   (236, 212), (243, 200)], closed=True)
    m = c.group([neck], SKIN, SKIN_LINE, 1.0)
    # shadow cast by the chin
    c.polys([spline([(236, 176), (256, 196), (276, 176), (276, 206), (256, 212), (236, 206)], closed=True)],
            SKIN_SHADE, clip=m)
    c.lines([spline([(246, 224), (252, 228)]), spline([(266, 224), (260, 228)])], SKIN_SHADE, 1.0, clip=m)


def draw_collar(c: Canvas) -> None:
    left = [(256, 290), (238, 262), (228, 236), (222, 212), (200, 220), (182, 230), (184, 250),
            (208, 266), (230, 282)]
    c.group([spline(left, closed=True), spline(mirror(left), closed=True)], COLLAR, CLOTH_LINE, 1.1)
    # white stripe along each collar flap
    stripe = [(248, 284), (229, 262), (216, 238), (214, 226), (192, 234), (188, 244), (206, 258), (226, 274)]
    c.lines([spline(stripe), spline(mirror(stripe))], SHIRT, 1.4)
    # ribbon bow
    loop_l = [(256, 276), (234, 264), (226, 276), (234, 290)]
    tail_l = [(252, 282), (238, 316), (246, 322), (256, 290)]
    rm = c.group([spline(part, closed=True) for part in (loop_l, mirror(loop_l), tail_l, mirror(tail_l))],
                 RIBBON, CLOTH_LINE, 1.0)
    fold = [(240, 282), (250, 282), (246, 312)]
    c.polys([spline(fold, closed=True), spline(mirror(fold), closed=True)], RIBBON_SHADE, clip=rm)
    c.group([ellipse_pts(256, 279, 6, 7)], RIBBON, CLOTH_LINE, 0.9)


def draw_face(c: Canvas) -> Image.Image:
    m = c.group([spline(FACE, closed=True)], SKIN, SKIN_LINE, 0.9)
    # blush
    c.polys([ellipse_pts(EYE_X[0] - 4, 158 + LOWER_DY, 10, 4.5), ellipse_pts(EYE_X[1] + 4, 158 + LOWER_DY, 10, 4.5)],
            BLUSH + (110,), clip=m, blur=2.2)
    # shadow under the bangs and along the hairline
    c.polys([spline([(206, 90), (306, 90), (306, 120), (290, 112), (280, 122), (268, 112), (256, 128),
                     (244, 112), (232, 122), (222, 112), (206, 120)], closed=True)], SKIN_SHADE, clip=m)
    return m


EYE_SCALE = 1.0   # eye size relative to the offsets below
LASH_SCALE = 1.6  # upper lash thickness multiplier
# A wide, almond eye (1.2× wider than tall) with a lash line spanning it: THA3 then draws a full-width lid
# line; rounder eyes (1.0) closed to short, faint lines.
EYE_WIDTH = 1.2   # horizontal stretch of the eye
EYE_HEIGHT = 1.0  # vertical stretch of the eye
OUTER_LASH = True   # the outer flick; without it the closed lid line comes out shorter
LASH_START = -10.0  # where the upper lash starts at the inner corner (eye units)
LASH_INNER = 1.2    # upper lash width at the inner corner (a thick inner end leaves a ghost tick when closed)


def draw_eye(c: Canvas, cx: float, side: int) -> None:
    """side=-1: outer corner towards the viewer's left; +1: towards the viewer's right."""
    cy, k, lw = EYE_Y, EYE_SCALE, LASH_SCALE

    kx, ky = k * EYE_WIDTH, k * EYE_HEIGHT

    def p(dx, dy):
        return (cx + side * dx * kx, cy + dy * ky)

    def ell(dx, dy, rx, ry):
        return ellipse_pts(cx + side * dx * kx, cy + dy * ky, rx * kx, ry * ky)

    # sclera: almond between the lash line and the lower lid
    white = spline([p(-10.5, -4), p(-5, -10.5), p(4, -11.5), p(11, -7.5), p(11.5, 3), p(6.5, 10), p(-3, 10),
                    p(-9.5, 4)], closed=True)
    wm = c.mask([white])
    c.polys([white], SCLERA)
    c.polys([spline([p(-12, -14), p(13, -14), p(12, -5), p(0, -6.5), p(-11, -3)], closed=True)],
            SCLERA_SHADE, clip=wm)
    # iris: vertical ellipse, darker top, lighter bottom, pupil, two highlights
    iris = ell(0.8, 0.5, 7.8, 10.6)
    c.group([iris], IRIS, IRIS_DARK, 0.45, clip=wm)
    im = c.mask([iris])
    c.polys([ell(0.8, 5.3, 5.6, 4.8)], IRIS_LIGHT, clip=im, blur=1.0)
    c.polys([spline([p(-8.2, -11.5), p(9.8, -11.5), p(8.8, -3), p(0.8, -1), p(-7.2, -3)], closed=True)],
            IRIS_DARK, clip=im)
    c.polys([ell(0.8, 1.0, 3.4, 4.8)], PUPIL, clip=im)
    c.polys([ell(-2.2, -3.5, 2.6, 3.0)], (255, 255, 255), clip=wm)
    c.polys([ell(4.0, 5.7, 1.2, 1.2)], (255, 255, 255, 230), clip=wm)
    # upper lash line: thick, dark, with a flick at the outer corner
    upper = spline([p(LASH_START, -3.5 + 0.55 * (LASH_START + 12)), p(-6, -10.2), p(2, -11.8), p(9, -9.6), p(12.5, -6), p(15, -3)])
    c.strokes([upper], LASH, LASH_INNER * k * lw, 1.2 * k * lw, power=0.9)
    c.strokes([spline([p(-5, -11.2), p(4, -12.4), p(11.5, -9.0)])], LASH, 4.0 * k * lw, 1.0 * k * lw)
    if OUTER_LASH:
        c.strokes([spline([p(10, -9.2), p(14, -9.4), p(17, -7.5)])], LASH, 1.8 * k * lw, 0.0)  # outer lash
    # lower lid: thin line, fading towards the inner corner
    c.strokes([spline([p(11.2, 4), p(6.5, 10.2), p(-2, 10.6)])], LASH, 1.2 * k, 0.2 * k)


def draw_brows_nose_mouth(c: Canvas) -> None:
    brow = spline([(x, y + BROW_DY) for x, y in [(222, 117.5), (230, 113.5), (239, 113.5), (246, 115.5)]])
    c.strokes([brow, spline(mirror(brow.tolist()))], BROW, 1.2, 1.8)
    c.strokes([brow, spline(mirror(brow.tolist()))], BROW, 2.0, 0.4)
    d = LOWER_DY
    # nose: a tiny shadow tick
    c.strokes([spline([(258.5, 154 + d), (259, 158 + d), (257, 160 + d)])], SKIN_LINE, 0.5, 1.2)
    # mouth: short, slightly smiling line with a darker centre
    m = MOUTH_DY
    c.strokes([spline([(248, 171 + m), (252, 173.2 + m), (256, 173.6 + m), (260, 173.2 + m), (264, 171 + m)])],
              MOUTH, 0.6, 0.6)
    c.strokes([spline([(251, 172.8 + m), (256, 173.8 + m), (261, 172.8 + m)])], MOUTH, 1.4, 0.3)


def draw_front_hair(c: Canvas) -> None:
    cap = spline([(186, 132), (188, 100), (200, 76), (226, 60), (256, 55), (286, 60), (312, 76), (324, 100),
                  (326, 132), (306, 96), (256, 84), (206, 96)], closed=True)
    bangs = [  # (root, mid, tip, width) from the viewer's left to right
        ((214, 86), (208, 108), (210, 130), 20),
        ((228, 80), (226, 100), (224, 118), 18),
        ((240, 78), (240, 98), (236, 117), 16),
        ((252, 78), (254, 100), (252, 126), 14),
        ((264, 78), (266, 98), (270, 116), 16),
        ((277, 80), (282, 100), (284, 119), 18),
        ((291, 84), (298, 104), (300, 126), 20),
    ]
    side_l = [((206, 92), (196, 150), (204, 206), 18), ((214, 100), (210, 150), (214, 178), 10)]
    locks = [lock(*b) for b in bangs]
    locks += [lock(*s) for s in side_l]
    locks += [lock(*(mirror([s[0], s[1], s[2]])), s[3]) for s in side_l]
    m = c.group([cap] + locks, HAIR, HAIR_LINE, 1.3)
    # shade along the underside of the bangs and on the side locks
    c.polys([lock((x0 + 1.5, y0 + 14), (xm + 1.5, ym + 6), (xt + 0.5, yt - 1), w * 0.45)
             for (x0, y0), (xm, ym), (xt, yt), w in bangs], HAIR_SHADE, clip=m)
    c.polys([lock((s[0][0] + 4, s[0][1] + 20), (s[1][0] + 3, s[1][1]), (s[2][0] + 1, s[2][1] - 2), s[3] * 0.45)
             for s in side_l], HAIR_SHADE, clip=m)
    c.polys([lock(*(mirror([(s[0][0] + 4, s[0][1] + 20), (s[1][0] + 3, s[1][1]), (s[2][0] + 1, s[2][1] - 2)])),
                  s[3] * 0.45) for s in side_l], HAIR_SHADE, clip=m)
    # "angel ring" highlight: short light dashes across the crown
    ring = []
    for x0 in range(204, 306, 17):
        xs = np.linspace(x0, x0 + 13, 12)
        ring.append(lens(np.stack([xs, 71 + 0.0042 * (xs - 256) ** 2], axis=1), 4.2))
    c.polys(ring, HAIR_LIGHT, clip=m)
    # strand lines inside the bangs, strongest near the tips
    strands = [spline([(x0 + w * 0.45, y0 + 10), (xm + w * 0.3, ym + 4), (xt, yt)])
               for (x0, y0), (xm, ym), (xt, yt), w in bangs]
    c.strokes(strands, HAIR_LINE, 0.2, 1.0, clip=m)
    # hair clip: a small yellow star on the viewer's right
    star = []
    for k in range(10):
        r = 6.5 if k % 2 == 0 else 2.8
        a = -np.pi / 2 + k * np.pi / 5
        star.append((306 + r * np.cos(a), 92 + r * np.sin(a)))
    c.group([np.asarray(star)], (255, 214, 72), HAIR_LINE, 0.8)


def render() -> np.ndarray:
    """Draw the character → (512, 512, 4) uint8 straight sRGB RGBA, transparent background."""
    c = Canvas()
    draw_back_hair(c)
    draw_body(c)
    draw_neck(c)
    draw_collar(c)
    draw_face(c)
    draw_eye(c, EYE_X[0], -1)
    draw_eye(c, EYE_X[1], +1)
    draw_brows_nose_mouth(c)
    draw_front_hair(c)
    return c.downsample()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output PNG (default: {OUT})")
    args = parser.parse_args(argv)
    from kyara.image import save_image  # the project's one PNG writer (atomic)

    save_image(render(), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
