"""Procedural instrument drawings, written for this project, so every class has pictures offline.

Free clipart covers some classes well (drums, trumpets) and others hardly at all (one tuba, one
clarinet). Each class here has a drawing function that builds the instrument from its parts (bodies,
necks, strings, keys, valves, bells, bars, drum heads) with PIL primitives; the shape parameters and
colours are drawn from a generator seeded by (class, variant), so variant k of a class is always the
same picture and different variants differ in proportions, colours, extras and pose. The features
that tell the classes apart are kept on purpose: bowed strings have f-holes and a bridge (violin held
at a slant, cello upright on its endpin), the guitar a round sound hole, the banjo a round drum head,
the brass their valves, slide or coils, the woodwinds their key rows, piano and accordion their keys.
Drawing is done at twice the requested size and reduced, which gives anti-aliased edges.

Each drawing comes in one of STYLES (flat fills, line art, silhouette, shaded pseudo-3D, pencil sketch,
pixel art, woodcut, neon, low-poly, watercolour, cartoon, blueprint/duotone): the canvas also keeps a
label image of the parts, from which the styles find outlines, hatch, light or polygonise them. Each
style is meant to be held out as a picture family. Within a style, variants differ in proportions
(a random aspect stretch), colours (sometimes repainted), style parameters (stroke widths, inks,
hatch spacing) and pose (rotation, sometimes a perspective foreshortening). ~7-30 ms a 224-px drawing.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

N_VARIANTS = 8

Colour = tuple[int, int, int, int]
CLEAR: Colour = (0, 0, 0, 0)


def _c(rgb, a: int = 255) -> Colour:
    return (int(np.clip(rgb[0], 0, 255)), int(np.clip(rgb[1], 0, 255)), int(np.clip(rgb[2], 0, 255)), a)


def _shade(col: Colour, k: float) -> Colour:
    """k < 1 darkens, k > 1 lightens towards white."""
    if k <= 1:
        return _c([v * k for v in col[:3]], col[3])
    return _c([v + (255 - v) * (k - 1) for v in col[:3]], col[3])


def _jit(rng, col, amount=18) -> Colour:
    return _c(np.asarray(col[:3], float) + rng.uniform(-amount, amount, 3))


WOODS = [(150, 75, 30), (180, 100, 40), (120, 55, 25), (200, 130, 60), (95, 45, 20), (170, 85, 50)]
BRASS = [(218, 170, 60), (230, 190, 80), (200, 150, 50)]
SILVER = [(200, 200, 210), (180, 185, 195), (220, 220, 225)]
BRIGHT = [(200, 40, 40), (30, 90, 180), (40, 140, 70), (230, 180, 30), (140, 50, 160), (30, 30, 35),
          (235, 235, 230), (220, 100, 30)]


class _Canvas:
    """PIL drawing in unit coordinates: (0, 0) top left, (1, 1) bottom right of a W x W canvas.

    Besides the colour image it keeps a label image (mode "I"): every primitive paints its own id
    there (0 where it cuts the drawing away), so the styles can find the outlines of the parts where
    they really show, after overlaps. `facets` > 0 draws ellipses and arcs as coarse polygons."""

    def __init__(self, w: int, facets: int = 0):
        self.w = w
        self.facets = facets
        self.img = Image.new("RGBA", (w, w), CLEAR)
        self.d = ImageDraw.Draw(self.img)
        self.lab = Image.new("I", (w, w), 0)
        self.ld = ImageDraw.Draw(self.lab)
        self.n = 0

    def _id(self, fill) -> int:
        self.n += 1
        return self.n if fill is not None and fill[3] > 0 else 0

    def _p(self, pts):
        return [(x * self.w, y * self.w) for x, y in pts]

    def _lw(self, width: float) -> int:
        return max(1, round(width * self.w))

    def ellipse(self, cx, cy, rx, ry, fill, outline=None, width=0.006):
        if self.facets:
            t = np.linspace(0, 2 * math.pi, self.facets, endpoint=False) + 0.3
            self.poly(list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t))), fill, outline, width)
            return
        box = [(cx - rx) * self.w, (cy - ry) * self.w, (cx + rx) * self.w, (cy + ry) * self.w]
        lw = self._lw(width) if outline else 0
        self.d.ellipse(box, fill=fill, outline=outline, width=lw)
        i = self._id(fill)
        self.ld.ellipse(box, fill=i, outline=i if outline else None, width=lw)

    def rect(self, x0, y0, x1, y1, fill, outline=None, width=0.006):
        box = [min(x0, x1) * self.w, min(y0, y1) * self.w, max(x0, x1) * self.w, max(y0, y1) * self.w]
        lw = self._lw(width) if outline else 0
        self.d.rectangle(box, fill=fill, outline=outline, width=lw)
        i = self._id(fill)
        self.ld.rectangle(box, fill=i, outline=i if outline else None, width=lw)

    def poly(self, pts, fill, outline=None, width=0.006):
        lw = self._lw(width) if outline else 0
        self.d.polygon(self._p(pts), fill=fill, outline=outline, width=lw)
        i = self._id(fill)
        self.ld.polygon(self._p(pts), fill=i, outline=i if outline else None, width=lw)

    def line(self, pts, fill, width=0.01):
        self.d.line(self._p(pts), fill=fill, width=self._lw(width), joint="curve")
        self.ld.line(self._p(pts), fill=self._id(fill), width=self._lw(width), joint="curve")

    def tube(self, pts, fill, width, edge=None):
        """A thick polyline with round joints (tubing); `edge` draws a darker rim under it."""
        if edge is not None:
            self.line(pts, edge, width + 0.012)
            for x, y in pts:
                self.ellipse(x, y, (width + 0.012) / 2, (width + 0.012) / 2, edge)
        self.line(pts, fill, width)
        for x, y in pts:
            self.ellipse(x, y, width / 2, width / 2, fill)

    def arc_pts(self, cx, cy, rx, ry, a0, a1, n=24):
        if self.facets:
            n = max(4, n // 3)
        t = np.linspace(math.radians(a0), math.radians(a1), n)
        return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))

    def flip(self):
        self.img = self.img.transpose(Image.FLIP_LEFT_RIGHT)
        self.d = ImageDraw.Draw(self.img)
        self.lab = self.lab.transpose(Image.FLIP_LEFT_RIGHT)
        self.ld = ImageDraw.Draw(self.lab)


def _cone(cv: _Canvas, x0, y0, x1, y1, r0, r1, fill, edge):
    """A flaring tube (bell) from (x0,y0) radius r0 to (x1,y1) radius r1, plus a rim ellipse."""
    dx, dy = x1 - x0, y1 - y0
    n = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / n, dx / n
    # Bell curve: radius grows slowly then fast (exponential horn), 12 samples per side.
    ts = np.linspace(0, 1, 12)
    rs = r0 + (r1 - r0) * ts ** 2.5
    left = [(x0 + dx * t + nx * r, y0 + dy * t + ny * r) for t, r in zip(ts, rs)]
    right = [(x0 + dx * t - nx * r, y0 + dy * t - ny * r) for t, r in zip(ts, rs)]
    cv.poly(left + right[::-1], fill, edge, 0.005)
    # The rim: an ellipse across the bell mouth, drawn as a polygon so it follows the bell axis.
    ang = np.linspace(0, 2 * math.pi, 24)
    rim = [(x1 + nx * r1 * math.cos(a) + dx / n * r1 * 0.3 * math.sin(a),
            y1 + ny * r1 * math.cos(a) + dy / n * r1 * 0.3 * math.sin(a)) for a in ang]
    cv.poly(rim, _shade(fill, 0.7), edge, 0.005)


def _bowed(cv: _Canvas, rng, cello: bool):
    wood = _jit(rng, WOODS[rng.integers(len(WOODS))])
    dark = _shade(wood, 0.55)
    black = _c((25, 20, 20))
    s = rng.uniform(0.9, 1.05)
    cx = 0.5
    # Vertical layout in unit coordinates; the cello body takes more of the height than the violin's.
    top, body_top, body_bot = (0.05, 0.36, 0.86) if cello else (0.04, 0.4, 0.9)
    bh = body_bot - body_top
    low_r = (0.21 if cello else 0.18) * s
    up_r = low_r * rng.uniform(0.8, 0.9)
    low_cy, up_cy = body_bot - bh * 0.3, body_top + bh * 0.26
    cv.ellipse(cx, low_cy, low_r, bh * 0.3, wood, dark)
    cv.ellipse(cx, up_cy, up_r, bh * 0.26, wood, dark)
    waist_y = body_top + bh * 0.55
    cv.rect(cx - up_r * 0.8, up_cy, cx + up_r * 0.8, low_cy, wood)
    cut = up_r * rng.uniform(0.5, 0.65)
    for sx in (-1, 1):  # C-bouts: the narrow waist
        cv.ellipse(cx + sx * (up_r * 0.85 + cut * 0.35), waist_y, cut * 0.55, bh * 0.11, CLEAR)
    # f-holes: two S-ish strokes either side of the bridge.
    for sx in (-1, 1):
        x = cx + sx * low_r * 0.42
        cv.line([(x - sx * 0.01, waist_y - bh * 0.08), (x, waist_y), (x + sx * 0.01, waist_y + bh * 0.12)],
                black, 0.008)
    # Neck and fingerboard, scroll at the top.
    cv.rect(cx - 0.022, top + 0.05, cx + 0.022, body_top + 0.02, dark)
    cv.poly([(cx - 0.02, top + 0.07), (cx + 0.02, top + 0.07), (cx + 0.035, waist_y + bh * 0.05),
             (cx - 0.035, waist_y + bh * 0.05)], black)
    cv.rect(cx - 0.03, top + 0.01, cx + 0.03, top + 0.08, wood, dark)
    cv.ellipse(cx, top + 0.01, 0.03, 0.025, wood, dark)
    for y in (top + 0.035, top + 0.06):  # pegs
        cv.rect(cx - 0.06, y - 0.007, cx + 0.06, y + 0.007, black)
    # Bridge, tailpiece, strings.
    by = waist_y + bh * 0.13
    cv.rect(cx - 0.045, by - 0.008, cx + 0.045, by + 0.008, _c((225, 200, 150)))
    cv.poly([(cx - 0.028, by + 0.04), (cx + 0.028, by + 0.04), (cx + 0.04, body_bot - 0.04),
             (cx - 0.04, body_bot - 0.04)], black)
    for i in range(4):
        x0 = cx - 0.012 + i * 0.008
        x1 = cx - 0.021 + i * 0.014
        cv.line([(x0, top + 0.08), (x1, body_bot - 0.05)], _c((230, 230, 220)), 0.003)
    if cello:
        cv.line([(cx, body_bot), (cx, 0.99)], _c((150, 150, 160)), 0.012)  # endpin
    else:
        cv.ellipse(cx + low_r * 0.45, body_bot - 0.03, 0.05, 0.03, black)  # chin rest
    if rng.random() < 0.6:  # the bow, across the strings
        ang = rng.uniform(-25, 25) + (0 if cello else 90)
        a = math.radians(ang)
        L = 0.42
        p0 = (cx - L * math.cos(a), by - 0.05 - L * math.sin(a))
        p1 = (cx + L * math.cos(a), by - 0.05 + L * math.sin(a))
        cv.line([p0, p1], _c((90, 50, 20)), 0.01)
        cv.line([(p0[0], p0[1] + 0.015), (p1[0], p1[1] + 0.015)], _c((235, 230, 210)), 0.006)
    if cello:
        return rng.uniform(-12, 12)
    return rng.choice([-1, 1]) * rng.uniform(35, 70)


def _violin(cv, rng):
    return _bowed(cv, rng, cello=False)


def _cello(cv, rng):
    return _bowed(cv, rng, cello=True)


def _guitar(cv, rng):
    kind = rng.integers(4)
    top = [(230, 190, 120), (240, 200, 140), (25, 25, 30), (180, 40, 40)][kind]
    top = _jit(rng, top, 12)
    edge = _shade(top, 0.5) if kind != 2 else _c((230, 230, 230))
    cx = 0.5
    low_r, up_r = rng.uniform(0.2, 0.24), rng.uniform(0.15, 0.18)
    cv.ellipse(cx, 0.74, low_r, 0.19, top, edge, 0.008)
    cv.ellipse(cx, 0.5, up_r, 0.14, top, edge, 0.008)
    cv.rect(cx - up_r * 0.9, 0.5, cx + up_r * 0.9, 0.72, top)
    if kind == 0 and rng.random() < 0.5:  # sunburst: darker rim
        cv.ellipse(cx, 0.74, low_r * 0.75, 0.14, _shade(top, 1.1))
    # Round sound hole with rosette: the guitar's tell-tale.
    cv.ellipse(cx, 0.55, 0.085, 0.085, _c((230, 220, 200)) if kind != 2 else _c((200, 170, 60)))
    cv.ellipse(cx, 0.55, 0.065, 0.065, _c((20, 15, 10)))
    if rng.random() < 0.5:  # pick guard
        cv.ellipse(cx + 0.1, 0.62, 0.05, 0.07, _c((40, 30, 30)) if kind != 2 else _c((200, 200, 200)))
    neck = _jit(rng, WOODS[rng.integers(len(WOODS))], 10)
    cv.rect(cx - 0.035, 0.07, cx + 0.035, 0.47, neck, _shade(neck, 0.6))
    for i in range(9):  # frets
        y = 0.09 + i * 0.04 * (1 - i * 0.03)
        cv.line([(cx - 0.035, y), (cx + 0.035, y)], _c((210, 210, 210)), 0.004)
    cv.poly([(cx - 0.05, 0.0), (cx + 0.05, 0.0), (cx + 0.04, 0.08), (cx - 0.04, 0.08)], _shade(neck, 0.8))
    for i in range(3):
        for sx in (-1, 1):
            cv.ellipse(cx + sx * 0.065, 0.015 + i * 0.022, 0.012, 0.008, _c((220, 220, 220)))
    cv.rect(cx - 0.07, 0.78, cx + 0.07, 0.8, _c((40, 25, 15)))  # bridge
    for i in range(6):
        x = cx - 0.025 + i * 0.01
        cv.line([(x, 0.05), (x, 0.79)], _c((235, 235, 225)), 0.0025)
    return rng.choice([-1, 1]) * rng.uniform(15, 55) if rng.random() < 0.8 else rng.uniform(-8, 8)


def _banjo(cv, rng):
    head = _jit(rng, (238, 232, 215), 10)
    rim = _jit(rng, SILVER[rng.integers(3)], 10)
    cx, cy, r = 0.5, 0.72, rng.uniform(0.2, 0.25)
    neck = _jit(rng, WOODS[rng.integers(len(WOODS))], 10)
    cv.rect(cx - 0.03, 0.06, cx + 0.03, cy - r * 0.5, neck, _shade(neck, 0.6))
    cv.ellipse(cx, cy, r + 0.025, r + 0.025, rim, _shade(rim, 0.6))
    for k in range(20):  # brackets around the rim
        a = 2 * math.pi * k / 20
        cv.ellipse(cx + (r + 0.015) * math.cos(a), cy + (r + 0.015) * math.sin(a), 0.007, 0.007, _shade(rim, 0.6))
    cv.ellipse(cx, cy, r, r, head, _shade(head, 0.8))
    cv.rect(cx - 0.05, cy + 0.06, cx + 0.05, cy + 0.075, _c((120, 80, 40)))  # bridge
    cv.poly([(cx - 0.03, cy + r * 0.7), (cx + 0.03, cy + r * 0.7), (cx + 0.015, cy + r + 0.02),
             (cx - 0.015, cy + r + 0.02)], _c((90, 90, 100)))  # tailpiece
    for i in range(8):
        y = 0.09 + i * 0.035
        cv.line([(cx - 0.03, y), (cx + 0.03, y)], _c((210, 210, 210)), 0.004)
    cv.poly([(cx - 0.045, 0.0), (cx + 0.045, 0.0), (cx + 0.035, 0.07), (cx - 0.035, 0.07)], _shade(neck, 0.8))
    cv.ellipse(cx + 0.045, 0.25, 0.012, 0.008, _c((230, 230, 230)))  # fifth-string peg
    for i in range(5):
        x = cx - 0.02 + i * 0.01
        cv.line([(x, 0.05 if i else 0.25), (x, cy + r * 0.7)], _c((235, 235, 235)), 0.0025)
    return rng.choice([-1, 1]) * rng.uniform(15, 55)


def _keys(cv, x0, y0, x1, y1, n_white, vertical=False):
    """A keyboard strip: n_white white keys with the 2+3 black-key pattern."""
    white, black = _c((248, 248, 245)), _c((20, 20, 22))
    edge = _c((120, 120, 120))
    start = 0
    for i in range(n_white):
        if vertical:
            a, b = y0 + (y1 - y0) * i / n_white, y0 + (y1 - y0) * (i + 1) / n_white
            cv.rect(x0, a, x1, b, white, edge, 0.003)
        else:
            a, b = x0 + (x1 - x0) * i / n_white, x0 + (x1 - x0) * (i + 1) / n_white
            cv.rect(a, y0, b, y1, white, edge, 0.003)
    for i in range(n_white - 1):
        if (i + start) % 7 in (2, 6):  # no black key between E-F and B-C
            continue
        if vertical:
            k = (y1 - y0) / n_white
            m = y0 + k * (i + 1)
            cv.rect(x0, m - k * 0.3, x0 + (x1 - x0) * 0.6, m + k * 0.3, black)
        else:
            k = (x1 - x0) / n_white
            m = x0 + k * (i + 1)
            cv.rect(m - k * 0.3, y0, m + k * 0.3, y0 + (y1 - y0) * 0.62, black)


def _piano(cv, rng):
    kind = rng.integers(3)
    case = _jit(rng, [(25, 22, 22), (90, 45, 20), (240, 240, 235), (130, 70, 35)][rng.integers(4)], 10)
    edge = _shade(case, 0.5) if case[0] > 60 else _c((90, 90, 90))
    if kind == 0:  # upright piano, front view
        cv.rect(0.08, 0.12, 0.92, 0.62, case, edge)
        cv.rect(0.05, 0.6, 0.95, 0.68, _shade(case, 0.85), edge)
        _keys(cv, 0.08, 0.62, 0.92, 0.72, int(rng.integers(14, 22)))
        cv.rect(0.08, 0.72, 0.92, 0.9, case, edge)
        cv.rect(0.1, 0.88, 0.16, 0.95, _shade(case, 0.8))
        cv.rect(0.84, 0.88, 0.9, 0.95, _shade(case, 0.8))
        cv.rect(0.3, 0.3, 0.7, 0.42, _shade(case, 1.15) if case[0] < 200 else _shade(case, 0.9))
    elif kind == 1:  # grand piano, three-quarter view: curved case, raised lid, legs
        body = [(0.05, 0.5), (0.6, 0.5)] + cv.arc_pts(0.72, 0.58, 0.2, 0.1, -90, 90, 12) + [(0.05, 0.68)]
        cv.poly(body, case, edge)
        lid = [(0.08, 0.5), (0.9, 0.15), (0.92, 0.48)]
        cv.poly(lid, _shade(case, 1.2) if case[0] < 128 else _shade(case, 0.9), edge)
        cv.line([(0.5, 0.5), (0.62, 0.32)], _c((40, 40, 40)), 0.006)  # lid prop
        _keys(cv, 0.05, 0.66, 0.6, 0.73, int(rng.integers(12, 18)))
        for x in (0.08, 0.55, 0.85):
            cv.rect(x, 0.7, x + 0.04, 0.92, _shade(case, 0.8))
    else:  # a keyboard on its own, top view
        cv.rect(0.02, 0.3, 0.98, 0.72, case, edge)
        _keys(cv, 0.05, 0.42, 0.95, 0.68, int(rng.integers(14, 24)))
        for i in range(int(rng.integers(3, 7))):
            cv.ellipse(0.1 + 0.06 * i, 0.36, 0.015, 0.015, _c(BRIGHT[rng.integers(len(BRIGHT))]))
    return rng.uniform(-10, 10)


def _accordion(cv, rng):
    col = _jit(rng, BRIGHT[rng.integers(len(BRIGHT))], 15)
    edge = _shade(col, 0.5)
    bellows = _c((30, 30, 35)) if rng.random() < 0.6 else _jit(rng, (200, 30, 30))
    spread = rng.uniform(0.16, 0.32)
    xl, xr = 0.5 - spread, 0.5 + spread
    # Bellows: alternating folds between the two end boxes, fanning open at the top.
    n = int(rng.integers(8, 13))
    for i in range(n):
        a, b = xl + (xr - xl) * i / n, xl + (xr - xl) * (i + 1) / n
        shade = 1.6 if i % 2 else 1.0
        cv.poly([(a, 0.18), (b, 0.18), (b + (b - 0.5) * 0.05, 0.82), (a + (a - 0.5) * 0.05, 0.82)],
                _shade(bellows, shade) if bellows[0] < 60 else _shade(bellows, 0.7 if i % 2 else 1.0))
    # Treble side (right): piano keys; bass side (left): a grid of buttons.
    cv.rect(xr, 0.12, xr + 0.22, 0.88, col, edge)
    _keys(cv, xr + 0.03, 0.16, xr + 0.14, 0.84, int(rng.integers(12, 18)), vertical=True)
    cv.rect(xl - 0.18, 0.14, xl, 0.86, col, edge)
    for i in range(6):
        for j in range(3):
            cv.ellipse(xl - 0.14 + j * 0.05, 0.22 + i * 0.11, 0.014, 0.014, _c((240, 240, 240)))
    cv.rect(xl - 0.05, 0.04, xr + 0.05, 0.08, _c((60, 40, 30)))  # strap
    return rng.uniform(-12, 12)


def _drum(cv, rng):
    kind = rng.integers(4)
    shell = _jit(rng, BRIGHT[rng.integers(len(BRIGHT))], 20)
    head = _jit(rng, (240, 235, 220), 10)
    metal = _jit(rng, SILVER[0], 10)
    if kind == 0:  # snare or tom, side view with lugs and sticks
        cv.rect(0.15, 0.45, 0.85, 0.8, shell, _shade(shell, 0.5))
        cv.ellipse(0.5, 0.8, 0.35, 0.08, _shade(shell, 0.7), _shade(shell, 0.5))
        cv.rect(0.15, 0.45, 0.85, 0.8, shell)
        for i in range(6):
            x = 0.2 + i * 0.12
            cv.rect(x - 0.012, 0.5, x + 0.012, 0.75, metal)
        cv.ellipse(0.5, 0.45, 0.35, 0.08, head, metal, 0.012)
        for a, b in (((0.2, 0.1), (0.6, 0.43)), ((0.8, 0.1), (0.4, 0.43))):
            cv.line([a, b], _c((200, 160, 100)), 0.02)
    elif kind == 1:  # bass drum, front view
        cv.ellipse(0.5, 0.5, 0.4, 0.4, shell, _shade(shell, 0.5))
        cv.ellipse(0.5, 0.5, 0.34, 0.34, head, metal, 0.015)
        cv.ellipse(0.5, 0.5, 0.12, 0.12, _jit(rng, BRIGHT[rng.integers(len(BRIGHT))]))
        for k in range(10):
            a = 2 * math.pi * k / 10
            cv.ellipse(0.5 + 0.37 * math.cos(a), 0.5 + 0.37 * math.sin(a), 0.015, 0.015, metal)
        cv.line([(0.2, 0.8), (0.1, 0.97)], metal, 0.015)
        cv.line([(0.8, 0.8), (0.9, 0.97)], metal, 0.015)
    elif kind == 2:  # hand drum (djembe/conga): a goblet with rope tuning
        body = [(0.3, 0.15), (0.7, 0.15), (0.66, 0.45), (0.58, 0.6), (0.62, 0.95), (0.38, 0.95), (0.42, 0.6),
                (0.34, 0.45)]
        cv.poly(body, shell, _shade(shell, 0.5))
        cv.ellipse(0.5, 0.15, 0.2, 0.05, head, _shade(head, 0.6))
        pts = [(0.32 + 0.04 * i, 0.2 + (0.2 if i % 2 else 0)) for i in range(10)]
        cv.line(pts, _c((230, 220, 180)), 0.006)
    else:  # small kit: bass drum, two toms, a cymbal
        cv.ellipse(0.5, 0.7, 0.25, 0.25, shell, _shade(shell, 0.5))
        cv.ellipse(0.5, 0.7, 0.2, 0.2, head, metal, 0.01)
        for x in (0.3, 0.7):
            cv.rect(x - 0.11, 0.35, x + 0.11, 0.5, shell, _shade(shell, 0.5))
            cv.ellipse(x, 0.35, 0.11, 0.035, head, metal, 0.008)
        cv.line([(0.9, 0.25), (0.9, 0.95)], metal, 0.008)
        cv.ellipse(0.9, 0.25, 0.1, 0.025, _c((210, 170, 60)))
    return rng.uniform(-10, 10)


def _harp(cv, rng):
    wood = _jit(rng, [(200, 150, 60), (150, 80, 35), (225, 190, 110)][rng.integers(3)], 12)
    edge = _shade(wood, 0.5)
    x_col = rng.uniform(0.15, 0.22)
    # Neck: an S-curve from the column top to the far end of the sound board.
    t = np.linspace(0, 1, 20)
    neck = [(x_col + (0.85 - x_col) * u, 0.1 + 0.08 * math.sin(u * 2 * math.pi) - 0.05 * u) for u in t]
    sb_top, sb_bot = (0.82, 0.13), (x_col + 0.08, 0.9)
    # Strings: from the neck down to the sound board, every few in red (the C strings).
    n = int(rng.integers(12, 20))
    for i in range(1, n):
        u = i / n
        x = x_col + (0.85 - x_col) * u
        ytop = 0.1 + 0.08 * math.sin(u * 2 * math.pi) - 0.05 * u
        # where the vertical at x meets the sound board line
        k = (x - sb_bot[0]) / (sb_top[0] - sb_bot[0])
        ybot = sb_bot[1] + (sb_top[1] - sb_bot[1]) * k
        col = _c((200, 30, 30)) if i % 7 == 0 else _c((240, 235, 220))
        cv.line([(x, ytop + 0.02), (x, ybot)], col, 0.004)
    cv.tube(neck, wood, 0.045, edge)
    cv.poly([(sb_bot[0] - 0.05, sb_bot[1]), (sb_bot[0] + 0.05, sb_bot[1]), (sb_top[0] + 0.02, sb_top[1]),
             (sb_top[0] - 0.02, sb_top[1])], _shade(wood, 1.1), edge)
    cv.rect(x_col - 0.03, 0.08, x_col + 0.03, 0.92, wood, edge)  # column
    cv.ellipse(x_col, 0.08, 0.045, 0.035, wood, edge)
    cv.rect(x_col - 0.06, 0.9, sb_bot[0] + 0.08, 0.97, _shade(wood, 0.8), edge)  # base
    if rng.random() < 0.5:
        cv.flip()
    return rng.uniform(-8, 8)


def _trumpet(cv, rng):
    metal = _jit(rng, (BRASS + SILVER)[rng.integers(5)], 12)
    edge = _shade(metal, 0.5)
    w = rng.uniform(0.028, 0.036)
    yl, yh = 0.42, rng.uniform(0.56, 0.62)
    # Main tubing: mouthpipe -> front loop -> valves -> bell.
    cv.tube([(0.12, yl), (0.7, yl)], metal, w, edge)
    cv.tube([(0.3, yh), (0.72, yh)], metal, w, edge)
    cv.tube(cv.arc_pts(0.3, (yl + yh) / 2, 0.06, (yh - yl) / 2, 90, 270, 10), metal, w, edge)
    cv.tube(cv.arc_pts(0.72, (yl + yh) / 2 + 0.1, 0.06, (yh - yl) / 2 + 0.1, -90, 90, 10), metal, w * 0.9, edge)
    cv.rect(0.05, yl - 0.012, 0.13, yl + 0.012, metal, edge)  # mouthpiece
    cv.ellipse(0.05, yl, 0.012, 0.025, metal, edge)
    _cone(cv, 0.62, yl, 0.97, yl, w / 2, rng.uniform(0.11, 0.15), metal, edge)
    for i in range(3):  # piston valves with finger buttons
        x = 0.4 + i * 0.075
        cv.rect(x - 0.025, yl - 0.06, x + 0.025, yh + 0.05, metal, edge)
        cv.rect(x - 0.008, yl - 0.12, x + 0.008, yl - 0.06, _shade(metal, 0.8))
        cv.ellipse(x, yl - 0.125, 0.022, 0.012, _c((240, 240, 235)), edge)
        cv.rect(x - 0.027, yh + 0.03, x + 0.027, yh + 0.05, _shade(metal, 0.8))
    return rng.uniform(-25, 25)


def _trombone(cv, rng):
    metal = _jit(rng, BRASS[rng.integers(3)], 12)
    edge = _shade(metal, 0.5)
    w = rng.uniform(0.022, 0.028)
    ext = rng.uniform(0.0, 0.08)  # how far the slide is pulled out
    y1, y2, y3 = 0.5, 0.57, 0.36
    # The slide: two long parallel tubes ending in a U, no valves.
    cv.tube([(0.04 - ext, y1), (0.62, y1)], metal, w, edge)
    cv.tube([(0.04 - ext, y2), (0.55, y2)], metal, w, edge)
    cv.tube(cv.arc_pts(0.04 - ext, (y1 + y2) / 2, 0.03, (y2 - y1) / 2, 90, 270, 8), metal, w, edge)
    cv.rect(0.48, y1 - 0.015, 0.56, y2 + 0.015, _shade(metal, 0.85), edge)  # slide brace
    # Bell section: back over the shoulder, round the tuning slide, forward to the bell.
    cv.tube([(0.62, y1), (0.86, y1)], metal, w, edge)
    cv.tube(cv.arc_pts(0.86, (y1 + y3) / 2, 0.06, (y1 - y3) / 2, -90, 90, 10), metal, w, edge)
    cv.tube([(0.86, y3), (0.5, y3)], metal, w, edge)
    _cone(cv, 0.55, y3, 0.25, y3, w / 2, rng.uniform(0.1, 0.14), metal, edge)
    cv.rect(0.62, y1 + 0.01, 0.66, y3 - 0.01, _shade(metal, 0.85))  # brace between the sections
    cv.rect(0.55, y2 - 0.01, 0.62, y2 + 0.01, metal, edge)  # mouthpiece
    return rng.uniform(-20, 20)


def _tuba(cv, rng):
    metal = _jit(rng, (BRASS + SILVER)[rng.integers(5)], 12)
    edge = _shade(metal, 0.5)
    w = rng.uniform(0.07, 0.09)
    cx, cy, r = 0.45, 0.66, rng.uniform(0.19, 0.23)
    # Big oval coil of wide tubing, then a large bell pointing up.
    ring = cv.arc_pts(cx, cy, r, r * 1.05, 0, 360, 30)
    cv.tube(ring, metal, w, edge)
    cv.tube(cv.arc_pts(cx, cy, r * 0.55, r * 0.6, 90, 330, 16), metal, w * 0.5, edge)
    bell_x = cx + rng.uniform(0.05, 0.12)
    _cone(cv, bell_x, cy - r * 0.7, bell_x + 0.08, 0.1, w * 0.6, rng.uniform(0.17, 0.22), metal, edge)
    for i in range(int(rng.integers(3, 5))):  # rotary/piston valves at the side
        x = cx - 0.2 + i * 0.055
        cv.rect(x - 0.02, cy - 0.15, x + 0.02, cy + 0.05, _shade(metal, 0.9), edge)
        cv.ellipse(x, cy - 0.16, 0.022, 0.01, _c((240, 240, 235)), edge)
    cv.tube([(cx - 0.2, cy - 0.05), (cx - 0.32, cy - 0.22), (cx - 0.36, cy - 0.3)], metal, 0.02, edge)
    cv.ellipse(cx - 0.36, cy - 0.31, 0.018, 0.012, metal, edge)  # mouthpiece
    return rng.uniform(-15, 15)


def _saxophone(cv, rng):
    metal = _jit(rng, (BRASS + [(30, 30, 35), (200, 200, 210)])[rng.integers(5)], 12)
    edge = _shade(metal, 0.5) if metal[0] > 60 else _c((120, 120, 120))
    # J shape: neck and mouthpiece at the top, a widening body down to the bow, bell turned up.
    x0, xb = rng.uniform(0.32, 0.38), rng.uniform(0.58, 0.64)
    body = [(x0 - 0.035, 0.2), (x0 + 0.035, 0.2), (x0 + 0.07, 0.78), (x0 - 0.05, 0.78)]
    cv.poly(body, metal, edge)
    cv.tube(cv.arc_pts((x0 + xb) / 2 + 0.01, 0.78, (xb - x0) / 2 + 0.01, 0.12, 0, 180, 14), metal, 0.11, edge)
    _cone(cv, xb + 0.02, 0.8, xb + 0.08, 0.42, 0.05, rng.uniform(0.11, 0.14), metal, edge)
    cv.tube([(x0, 0.22), (x0 + 0.02, 0.12), (x0 - 0.06, 0.06)], metal, 0.025, edge)
    cv.line([(x0 - 0.06, 0.06), (x0 - 0.12, 0.04)], _c((20, 20, 20)), 0.025)  # mouthpiece
    # Key pads down the body.
    for i in range(7):
        y = 0.28 + i * 0.07
        cv.ellipse(x0 + 0.01 + i * 0.003, y, 0.022, 0.022, _shade(metal, 0.8), _c((60, 40, 20)), 0.004)
    cv.line([(x0 + 0.045, 0.26), (x0 + 0.07, 0.74)], _shade(metal, 0.7), 0.006)
    return rng.uniform(-20, 20)


def _clarinet(cv, rng):
    body = _jit(rng, [(25, 22, 24), (45, 30, 25), (30, 30, 40)][rng.integers(3)], 8)
    metal = _jit(rng, SILVER[rng.integers(3)], 8)
    w = rng.uniform(0.03, 0.036)
    cx = 0.5
    # Straight tube: mouthpiece, barrel, two joints with metal rings, flared bell at the bottom.
    cv.poly([(cx - w * 0.6, 0.02), (cx + w * 0.6, 0.02), (cx + w, 0.1), (cx - w, 0.1)], _c((15, 15, 15)))
    cv.rect(cx - w * 1.1, 0.09, cx + w * 1.1, 0.11, metal)  # ligature
    cv.rect(cx - w * 1.2, 0.1, cx + w * 1.2, 0.17, body)  # barrel
    cv.rect(cx - w, 0.17, cx + w, 0.82, body)
    for y in (0.17, 0.45, 0.5, 0.8):
        cv.rect(cx - w * 1.25, y - 0.008, cx + w * 1.25, y + 0.008, metal)
    cv.poly([(cx - w, 0.8), (cx + w, 0.8), (cx + w * 3.0, 0.98), (cx - w * 3.0, 0.98)], body)
    cv.rect(cx - w * 3.0, 0.97, cx + w * 3.0, 0.985, metal)
    # Tone holes with rings and key rods.
    for i in range(9):
        y = 0.22 + i * 0.065
        cv.ellipse(cx, y, w * 0.45, w * 0.45, _c((5, 5, 5)), metal, 0.005)
        cv.rect(cx + w * 0.4, y - 0.004, cx + w * 1.2, y + 0.004, metal)
    cv.line([(cx + w * 1.1, 0.2), (cx + w * 1.1, 0.78)], metal, 0.005)
    return rng.choice([-1, 1]) * rng.uniform(10, 40)


def _flute(cv, rng):
    kind = rng.integers(4)
    metal = _jit(rng, (SILVER + [(215, 180, 90)])[kind], 10)
    edge = _shade(metal, 0.55)
    h = rng.uniform(0.022, 0.028)
    y = 0.5
    # Long thin horizontal tube: crown, head joint with lip plate, body with a row of keys, foot.
    cv.rect(0.03, y - h, 0.97, y + h, metal, edge, 0.004)
    cv.ellipse(0.03, y, 0.01, h, _shade(metal, 0.8))
    cv.ellipse(0.13, y - h * 0.2, 0.025, h * 0.9, _shade(metal, 1.15), edge, 0.004)  # lip plate
    cv.ellipse(0.13, y - h * 0.2, 0.008, h * 0.4, _c((30, 30, 30)))  # embouchure hole
    for x in (0.24, 0.8):
        cv.rect(x - 0.006, y - h * 1.1, x + 0.006, y + h * 1.1, _shade(metal, 0.8))
    cv.line([(0.3, y - h * 0.9), (0.93, y - h * 0.9)], _shade(metal, 0.7), 0.004)  # key rod
    n = int(rng.integers(8, 13))
    for i in range(n):
        x = 0.32 + i * (0.58 / n)
        cv.ellipse(x, y, h * 0.8, h * 0.8, _shade(metal, 1.2), edge, 0.004)
        if i % 3 == 1:
            cv.ellipse(x, y, h * 0.3, h * 0.3, _c((40, 40, 40)))
    return rng.choice([-1, 1]) * rng.uniform(0, 30)


def _xylophone(cv, rng):
    rainbow = rng.random() < 0.4
    wood = _jit(rng, [(170, 95, 45), (200, 140, 80), (120, 60, 30)][rng.integers(3)], 10)
    n = int(rng.integers(8, 14))
    gap = 0.012
    bw = (0.84 - gap * (n - 1)) / n
    frame = _c((60, 50, 45)) if rng.random() < 0.6 else _jit(rng, BRIGHT[rng.integers(len(BRIGHT))])
    # Rails under the bars, bars shrinking from left to right, nails on the rails.
    cv.poly([(0.06, 0.3), (0.94, 0.4), (0.94, 0.44), (0.06, 0.36)], frame)
    cv.poly([(0.06, 0.78), (0.94, 0.66), (0.94, 0.7), (0.06, 0.84)], frame)
    for i in range(n):
        x = 0.08 + i * (bw + gap)
        u = i / max(1, n - 1)
        top, bot = 0.25 + 0.12 * u, 0.88 - 0.16 * u
        col = _c(np.array(BRIGHT[i % len(BRIGHT)])) if rainbow else _jit(rng, wood, 6)
        cv.rect(x, top, x + bw, bot, col, _shade(col, 0.5), 0.004)
        for yy in (0.33 + 0.09 * u, 0.81 - 0.12 * u):
            cv.ellipse(x + bw / 2, yy, 0.006, 0.006, _c((200, 200, 200)))
    if rng.random() < 0.5:  # marimba-style resonator tubes
        for i in range(n):
            x = 0.08 + i * (bw + gap) + bw * 0.25
            u = i / max(1, n - 1)
            cv.rect(x, 0.88 - 0.16 * u, x + bw * 0.5, 0.98 - 0.2 * u, _c((180, 180, 190)))
    for a, b in (((0.25, 0.05), (0.45, 0.5)), ((0.75, 0.05), (0.55, 0.5))):  # two mallets
        cv.line([a, b], _c((210, 180, 130)), 0.012)
        cv.ellipse(b[0], b[1], 0.03, 0.03, _jit(rng, BRIGHT[rng.integers(len(BRIGHT))]))
    return rng.uniform(-12, 12)


_DRAW = {
    "violin": _violin, "cello": _cello, "acoustic_guitar": _guitar, "banjo": _banjo, "piano": _piano,
    "accordion": _accordion, "drum": _drum, "harp": _harp, "trumpet": _trumpet, "trombone": _trombone,
    "tuba": _tuba, "saxophone": _saxophone, "clarinet": _clarinet, "flute": _flute, "xylophone": _xylophone,
}


# ---------------------------------------------------------------- styles
#
# Each style turns the drawn parts (colour image + label image, at twice the output size) into a
# different kind of picture, so a style can be held out as a picture family the models never saw.

STYLES: tuple[str, ...] = ("flat", "outline", "silhouette", "shaded", "sketch", "pixel", "woodcut", "neon",
                           "lowpoly", "watercolour", "cartoon", "blueprint")

INKS = [(15, 15, 18), (45, 30, 20), (20, 30, 70), (60, 60, 65), (90, 20, 20)]


def _edges(lab: np.ndarray) -> np.ndarray:
    """Pixels where the part label changes (part boundaries and the outline against the background)."""
    e = np.zeros(lab.shape, bool)
    dx = lab[:, 1:] != lab[:, :-1]
    dy = lab[1:] != lab[:-1]
    e[:, 1:] |= dx
    e[:, :-1] |= dx
    e[1:] |= dy
    e[:-1] |= dy
    return e


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1) square, separable shifts."""
    m = m.copy()
    for axis in (0, 1):
        out = m.copy()
        for k in range(1, r + 1):
            if axis == 0:
                out[k:] |= m[:-k]
                out[:-k] |= m[k:]
            else:
                out[:, k:] |= m[:, :-k]
                out[:, :-k] |= m[:, k:]
        m = out
    return m


def _blur(x: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a [0, 1] float map, (H, W) or (H, W, 3) (through an 8-bit PIL image: fast)."""
    im = Image.fromarray((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.asarray(im.filter(ImageFilter.GaussianBlur(radius)), np.float32) / 255


def _lowfreq(rng, w: int, cells: int) -> np.ndarray:
    """(w, w) smooth value noise in about [0, 1]."""
    g = Image.fromarray(rng.random((cells, cells)).astype(np.float32))
    return np.asarray(g.resize((w, w), Image.BICUBIC), np.float32)


def _lum(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def _hsv(rgb: np.ndarray, sat: float = 1.0, val: float = 1.0, hue: float = 0.0) -> np.ndarray:
    """Scale saturation and value and rotate hue (fraction of a turn) of a (H, W, 3) float image."""
    if hue == 0:  # fast approximation: push colours away from their grey
        g = _lum(rgb)[..., None]
        return np.clip((g + (rgb - g) * sat) * val, 0, 255)
    hsv = np.asarray(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).convert("HSV"), np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue * 256) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * val, 0, 255)
    return np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"), np.float32)


def _hatch(w: int, angle: float, spacing: float, wobble: np.ndarray | None = None) -> np.ndarray:
    """(w, w) phase in [0, 1) of parallel lines at `angle` (radians) `spacing` pixels apart."""
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32)
    u = (xx * math.cos(angle) + yy * math.sin(angle)) / spacing
    if wobble is not None:
        u = u + wobble
    return u - np.floor(u)


def _style_pixels(style: str, rgba: np.ndarray, lab: np.ndarray, rng) -> np.ndarray:
    """Apply `style` to a (W, W, 4) uint8 drawing with its (W, W) part labels; returns RGBA uint8."""
    W = rgba.shape[0]
    rgb = rgba[..., :3].astype(np.float32)
    a = rgba[..., 3].astype(np.float32) / 255
    inside = a > 0.5
    edge = _edges(lab)
    out_a = a

    def ink():
        return np.array(INKS[rng.integers(len(INKS))], np.float32)

    if style == "flat":
        return rgba
    if style == "outline":  # line art: every visible part boundary, no fill
        r = int(rng.integers(1, max(2, int(0.012 * W))))
        stroke = _dilate(edge, r) if r > 0 else edge
        col = ink() if rng.random() < 0.8 else _jit(rng, BRIGHT[rng.integers(len(BRIGHT))], 10)[:3]
        rgb = np.broadcast_to(np.asarray(col, np.float32), rgb.shape)
        out_a = stroke.astype(np.float32)
    elif style == "silhouette":  # one colour, the shape only
        col = ink() if rng.random() < 0.6 else np.asarray(_jit(rng, BRIGHT[rng.integers(len(BRIGHT))])[:3], np.float32)
        rgb = np.broadcast_to(col, rgb.shape)
        if rng.random() < 0.5:  # stencil: the parts' inner boundaries cut out as thin gaps
            outer = _dilate(~inside, 2)
            out_a = np.where(edge & ~outer, 0.0, a)
    elif style == "shaded":  # pseudo-3D: each part bulges (height from its blurred interior), lit from one side
        interior = (inside & ~_dilate(edge, 1)).astype(np.float32)
        h = _blur(interior, rng.uniform(0.012, 0.03) * W)
        gy, gx = np.gradient(h)
        k = rng.uniform(25, 60)
        nx, ny, nz = -gx * k, -gy * k, np.ones_like(h)
        n = np.sqrt(nx ** 2 + ny ** 2 + 1)
        th = rng.uniform(0, 2 * math.pi)
        light = np.array([math.cos(th) * 0.6, -abs(math.sin(th)) * 0.6, 0.75])
        light /= np.linalg.norm(light)
        d = (nx * light[0] + ny * light[1] + nz * light[2]) / n
        spec = np.clip((d - 0.9) / 0.1, 0, 1) ** 2 * rng.uniform(0.3, 0.8)
        yy = np.linspace(rng.uniform(1.05, 1.2), rng.uniform(0.7, 0.9), W, dtype=np.float32)[:, None]
        rgb = rgb * (0.35 + 0.75 * np.clip(d, 0, 1))[..., None] * yy[..., None] + 255 * spec[..., None]
        rgb = rgb * np.where(edge, 0.6, 1.0)[..., None]
    elif style == "sketch":  # pencil: jittered, broken multi-strokes and hatching in the dark areas
        col = ink() if rng.random() < 0.7 else np.array([60, 70, 140], np.float32)
        stroke = np.zeros((W, W), np.float32)
        for _ in range(int(rng.integers(2, 4))):
            dx, dy = rng.integers(-2, 3, 2)
            e = np.roll(edge, (int(dy), int(dx)), axis=(0, 1))
            gaps = _lowfreq(rng, W, int(rng.integers(12, 30))) > rng.uniform(0.15, 0.35)
            stroke = np.maximum(stroke, e * gaps * rng.uniform(0.55, 0.95))
        lum = _lum(rgb)
        wob = 0.6 * _lowfreq(rng, W, 8)
        sp = rng.uniform(0.012, 0.022) * W
        ang = rng.uniform(0.5, 1.1) * rng.choice([-1, 1])
        h1 = (_hatch(W, ang, sp, wob) < 0.22) & (lum < rng.uniform(120, 190))
        h2 = (_hatch(W, ang + math.pi / 2, sp, wob) < 0.22) & (lum < rng.uniform(50, 100))
        hatch = (h1 | h2) & inside
        stroke = np.maximum(stroke, hatch * rng.uniform(0.4, 0.7))
        out_a = stroke
        if rng.random() < 0.3:  # coloured-pencil wash
            wash = inside * 0.3
            out_a = np.maximum(stroke, wash)
            t = (stroke / np.maximum(out_a, 1e-3))[..., None]
            rgb = col * t + _hsv(rgb, 1.2, 1.1) * (1 - t)
        else:
            rgb = np.broadcast_to(col, rgb.shape)
    elif style == "woodcut":  # engraving: black hatching, thicker where darker, on cream, hard outlines
        paper = np.array(_jit(rng, (238, 228, 200), 10)[:3], np.float32)
        col = np.array(INKS[int(rng.integers(2))], np.float32)
        dark = 1 - _lum(rgb) / 255
        dark = np.clip((dark - dark[inside].min(initial=0)) * rng.uniform(1.0, 1.6), 0, 1)
        wob = rng.uniform(0.2, 0.8) * _lowfreq(rng, W, 6)
        phase = _hatch(W, rng.uniform(-0.9, 0.9), rng.uniform(0.014, 0.024) * W, wob)
        line = np.abs(phase - 0.5) * 2 < dark * 0.95
        edges = _dilate(edge, int(rng.integers(1, 4)))
        inkm = (line | edges) & inside | edges
        rgb = np.where(inkm[..., None], col, paper)
        out_a = np.maximum(a, edges)
    elif style == "neon":  # glowing tubes along the part outlines
        one = rng.random() < 0.5
        hue = rng.uniform(0, 1)
        base = _hsv(rgb, 2.5, 1.6)
        if one:
            c = _hsv(np.array([[[255, 40, 40]]], np.float32), 1, 1, hue)[0, 0]
            base = np.broadcast_to(c, rgb.shape)
        core = _dilate(edge, int(rng.integers(1, 3))).astype(np.float32)
        glow = np.clip(_blur(core, rng.uniform(0.01, 0.025) * W) * rng.uniform(2.0, 3.5), 0, 1)
        if one:
            tint = base
        else:  # spread the part colours from the outlines into the glow around them
            r = rng.uniform(0.01, 0.02) * W
            tint = _blur(base * core[..., None] / 255, r) / np.maximum(_blur(core, r), 1e-2)[..., None] * 255
        rgb = tint * (1 - core[..., None] * 0.6) + 255 * core[..., None] * 0.6
        out_a = np.maximum(core, glow * 0.85)
    elif style == "lowpoly":  # polygonised parts (canvas facets) plus flat-shaded triangular facets
        g = int(rng.integers(7, 14))
        pts = np.stack(np.meshgrid(np.linspace(0, W, g + 1), np.linspace(0, W, g + 1)), -1)
        pts[1:-1, 1:-1] += rng.uniform(-0.35, 0.35, (g - 1, g - 1, 2)) * W / g
        fac = Image.new("I", (W, W), 0)
        fd = ImageDraw.Draw(fac)
        gain = [1.0]
        th = rng.uniform(0, 2 * math.pi)
        for i in range(g):
            for j in range(g):
                p00, p01, p10, p11 = pts[i, j], pts[i, j + 1], pts[i + 1, j], pts[i + 1, j + 1]
                for tri in ((p00, p01, p11), (p00, p11, p10)):
                    c = np.mean(tri, 0) / W - 0.5
                    gain.append(1 + 0.4 * (c[0] * math.cos(th) + c[1] * math.sin(th)) + rng.uniform(-0.15, 0.15))
                    fd.polygon([tuple(q) for q in tri], fill=len(gain) - 1)
        rgb = rgb * np.asarray(gain, np.float32)[np.asarray(fac)][..., None]
    elif style == "watercolour":  # soft, bleeding colour, darker pooled edges, ragged outline, paper grain
        r = rng.uniform(0.004, 0.012) * W
        pre = rgb * a[..., None] / 255
        ab = _blur(a, r)
        cb = _blur(pre, r) * 255 / np.maximum(ab, 1e-2)[..., None]
        noise = _lowfreq(rng, W, int(rng.integers(15, 40)))
        ar = np.clip((ab - 0.5 + rng.uniform(0.2, 0.45) * (noise - 0.5)) * 5 + 0.5, 0, 1)
        pool = np.clip(_blur((ar > 0.5).astype(np.float32), 0.006 * W), 0, 1)
        band = np.clip(1 - np.abs(pool - 0.5) * 2, 0, 1)
        wet = rng.uniform(0.15, 0.35)
        rgb = _hsv(cb, rng.uniform(0.8, 1.2)) * (1 - wet) + 255 * wet
        grain = 0.9 + 0.1 * _lowfreq(rng, W, W // 3)
        rgb = rgb * (1 - 0.3 * band)[..., None] * grain[..., None]
        out_a = ar * rng.uniform(0.8, 0.97)
    elif style == "cartoon":  # saturated posterised fills, thick dark outlines, thicker outer outline
        levels = int(rng.integers(3, 6))
        rgb = _hsv(rgb, rng.uniform(1.3, 1.8), rng.uniform(1.0, 1.2))
        rgb = np.round(rgb / 255 * levels) / levels * 255
        col = ink()
        inner = _dilate(edge, int(rng.integers(1, max(2, int(0.008 * W)))))
        outer = _dilate(inside, int(rng.integers(2, max(3, int(0.014 * W)))))
        rgb = np.where((inner | (outer & ~inside))[..., None], col, rgb)
        out_a = np.maximum(a, outer)
    elif style == "blueprint":  # technical drawing: white lines on blue, or a two-colour print
        lines = _dilate(edge, int(rng.integers(0, 2))) if rng.random() < 0.6 else edge
        if rng.random() < 0.5:
            blue = np.array(_jit(rng, (25, 70, 150), 20)[:3], np.float32)
            white = np.array(_jit(rng, (235, 240, 250), 10)[:3], np.float32)
            sp = rng.uniform(0.03, 0.06) * W
            grid = ((_hatch(W, 0, sp) < 0.08) | (_hatch(W, math.pi / 2, sp) < 0.08)) & inside
            rgb = np.where(lines[..., None], white, np.where(grid[..., None], blue * 0.7 + white * 0.3, blue))
        else:
            c1 = np.array(_jit(rng, INKS[rng.integers(len(INKS))], 10)[:3], np.float32)
            c2 = np.array(_jit(rng, BRIGHT[rng.integers(len(BRIGHT))], 20)[:3], np.float32) * 0.5 + 127
            t = np.clip(_lum(rgb) / 255 * rng.uniform(1.0, 1.4), 0, 1)[..., None]
            t = np.round(t * 3) / 3
            rgb = np.where(lines[..., None], c1, c1 + (c2 - c1) * t)
        out_a = np.maximum(a, lines)
    else:
        raise KeyError(f"unknown drawing style {style!r}; styles: {', '.join(STYLES)}")
    out = np.empty(rgba.shape, np.uint8)
    out[..., :3] = np.clip(rgb, 0, 255)
    out[..., 3] = np.clip(out_a * 255 + 0.5, 0, 255)
    return out


def _pixelate(img: Image.Image, rng) -> Image.Image:
    """Pixel art: shrink to 20-50 pixels, a few colours, binary alpha, maybe a dark rim; nearest upscale."""
    w, h = img.size
    k = rng.uniform(3.5, 8)
    sw, sh = max(2, round(w / k)), max(2, round(h / k))
    small = img.convert("RGBa").resize((sw, sh), Image.BOX).convert("RGBA")
    arr = np.asarray(small).copy()
    keep = arr[..., 3] > rng.uniform(40, 90)
    pal = small.convert("RGB").quantize(int(rng.integers(4, 11)), Image.Quantize.MEDIANCUT).convert("RGB")
    arr[..., :3] = np.asarray(pal)
    arr[..., 3] = np.where(keep, 255, 0)
    if rng.random() < 0.5:
        rim = _dilate(keep, 1) & ~keep
        arr[rim] = (20, 20, 25, 255)
    return Image.fromarray(arr).resize((w, h), Image.NEAREST)


def _perspective(img: Image.Image, rng) -> Image.Image:
    """Foreshorten: one side of the picture recedes (a projective warp), as seen from off-axis. The near
    side keeps its length, so the result needs no enlarging (which would widen the soft edges)."""
    w, h = img.size
    f = rng.uniform(0.1, 0.35)
    side = int(rng.integers(4))
    src = np.array([(0, 0), (w, 0), (w, h), (0, h)], np.float64)
    dst = src.copy()
    if side == 0:    # right side further away
        dst[1, 1] += f * h / 2
        dst[2, 1] -= f * h / 2
    elif side == 1:  # left side
        dst[0, 1] += f * h / 2
        dst[3, 1] -= f * h / 2
    elif side == 2:  # top further away
        dst[0, 0] += f * w / 2
        dst[1, 0] -= f * w / 2
    else:            # bottom
        dst[3, 0] += f * w / 2
        dst[2, 0] -= f * w / 2
    # PIL maps output (x, y) to input ((a x + b y + c) / (g x + h y + 1), (d x + e y + f) / (...)).
    A, B = [], []
    for (x, y), (u, v) in zip(dst, src):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        B += [u, v]
    coef = np.linalg.solve(np.array(A), np.array(B))
    return img.transform((w, h), Image.PERSPECTIVE, tuple(coef), resample=Image.BILINEAR)


def _fit_premul(img: Image.Image, size: int, aspect: float = 1.0) -> Image.Image:
    """Crop to the visible pixels and scale so the longest side is `size` (width stretched by `aspect`)."""
    bbox = img.getchannel("a").getbbox()
    if bbox:
        img = img.crop(bbox)
    w, h = img.size
    w = w * aspect
    k = size / max(w, h)
    return img.resize((max(1, round(w * k)), max(1, round(h * k))), Image.LANCZOS)


def draw(cls: str, variant: int, size: int = 224, style: str = "flat") -> np.ndarray:
    """(size, size, 4) uint8 RGBA drawing of `cls`, variant `variant`, in `style` (one of STYLES);
    transparent background; the same arguments give the same pixels.

    The drawing's shape parameters come from (cls, variant) for "flat" (the original drawings) and
    from (cls, style, variant) otherwise; the style's own parameters (stroke widths, inks, palettes),
    a proportion stretch, a recolouring and a perspective foreshortening from (cls, style, variant)."""
    if cls not in _DRAW:
        raise KeyError(f"no drawing for class {cls!r}")
    if style not in STYLES:
        raise KeyError(f"unknown drawing style {style!r}; styles: {', '.join(STYLES)}")
    key = f"{cls}:{variant}" if style == "flat" else f"{cls}:{style}:{variant}"
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    srng = np.random.default_rng(zlib.crc32(f"style:{cls}:{style}:{variant}".encode()))
    facets = int(srng.integers(5, 9)) if style == "lowpoly" else 0
    cv = _Canvas(2 * size, facets)
    angle = float(_DRAW[cls](cv, rng))
    rgba = np.asarray(cv.img)
    if style in ("flat", "shaded", "lowpoly", "cartoon", "watercolour") and srng.random() < 0.3:
        # Repainted: the same instrument in other colours (hue turned, saturation changed).
        rgb = _hsv(rgba[..., :3].astype(np.float32), srng.uniform(0.6, 1.5), 1.0, srng.uniform(0.1, 0.9))
        rgba = np.concatenate([rgb.astype(np.uint8), rgba[..., 3:]], -1)
    lab = np.asarray(cv.lab)
    if style == "watercolour":  # a soft style: styled at the output size, 4x cheaper
        rgba = np.asarray(Image.fromarray(rgba).convert("RGBa").reduce(2).convert("RGBA"))
        lab = lab[::2, ::2]
    if style not in ("flat", "pixel"):
        rgba = _style_pixels(style, rgba, lab, srng)
    img = Image.fromarray(np.ascontiguousarray(rgba)).convert("RGBa")  # premultiplied: clean resampled edges
    # Proportions: the drawing a little wider or narrower than drawn (body length vs width, neck length).
    aspect = float(np.exp(srng.normal(0, 0.1 if style == "flat" else 0.14)))
    # Reduce first (anti-aliasing), then rotate at the small size: rotating the 2x canvas costs ~30 ms.
    img = _fit_premul(img, size, aspect)
    if abs(angle) > 0.5:
        img = _fit_premul(img.rotate(angle, resample=Image.BICUBIC, expand=True), size)
    if srng.random() < (0.25 if style == "flat" else 0.5):
        img = _fit_premul(_perspective(img, srng), size)
    img = img.convert("RGBA")
    if style == "pixel":
        img = _pixelate(img, srng)
    out = Image.new("RGBA", (size, size), CLEAR)
    out.paste(img, ((size - img.size[0]) // 2, (size - img.size[1]) // 2))
    arr = np.asarray(out).copy()
    arr[arr[..., 3] < 12] = 0  # no faint resampling halo around the drawing
    return arr
