"""Video frames of instrument pictures that move like players, with the box of each instrument.

A synthetic clip shows one, two or three players in front of a generated background (gradients, value
noise, wood, bricks/tiles, stage curtain, bokeh room, sky, fabric, ...), in tidy columns or a free
layout (varied spacing and scale, players cut by the frame edge), and then, per clip, lighting and
colour shifts, vignette or spotlight, defocus or motion blur, sensor noise and JPEG artefacts.
Each instrument picture sways, rocks and drifts the way a player does, and bobs with its own stem's
loudness envelope, so that picture motion and sound are correlated as in real performance videos (what
the audio-visual models learn from). The camera drifts a little; sometimes a coloured shape (a stand,
a pole, a passing head) crosses in front of an instrument for part of the clip. Boxes are the tight
extent of each instrument's drawn pixels in every frame, clipped to the frame, whether or not an
occluder hides part of it; the hidden fraction is reported separately. Everything is drawn from the
caller's numpy Generator, so the same generator state gives the same clip. A 6 s clip at 8 fps,
224 x 224, renders in tens of milliseconds (PIL affine warps of small patches, numpy compositing).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

# Per-clip probability of each degradation (applied after compositing; boxes are unaffected).
DEGRADATIONS: dict[str, float] = {"photometric": 0.7, "vignette": 0.35, "spotlight": 0.2, "defocus": 0.12,
                                      "motion_blur": 0.1, "noise": 0.45, "jpeg": 0.3}
LAYOUT_PROBS: dict[str, float] = {"columns": 0.4, "free": 0.6}
SCALE_PROBS: dict[str, float] = {"small": 0.2, "medium": 0.6, "large": 0.2}
# Longest side of a solo instrument as a fraction of the frame (shared between players in ensembles).
SCALE_RANGES: dict[str, tuple[float, float]] = {"small": (0.22, 0.45), "medium": (0.5, 0.85), "large": (0.85, 1.25)}

# A pixel counts as part of the instrument when its alpha exceeds this (of 255).
ALPHA_THRESHOLD = 24


@dataclass
class Scene:
    frames: np.ndarray    # (T, S, S, 3) uint8
    boxes: np.ndarray     # (P, T, 4) float32 x0, y0, x1, y1 in pixels; x1, y1 exclusive; clipped to frame
    occluded: np.ndarray  # (P, T) float32: fraction of the instrument's drawn pixels hidden by an occluder
    visible: np.ndarray   # (P, T) bool: the instrument has drawn pixels inside the frame
    info: dict = field(default_factory=dict)  # layout left to right, background kind, occluder window


def _smooth_wave(rng, t: np.ndarray, f_lo: float, f_hi: float, n: int = 2) -> np.ndarray:
    """A slow random signal in [-1, 1]: a sum of n sinusoids with random frequencies and phases."""
    out = np.zeros_like(t)
    for _ in range(n):
        out += np.sin(2 * math.pi * rng.uniform(f_lo, f_hi) * t + rng.uniform(0, 2 * math.pi))
    return out / n


def _envelope(env: np.ndarray | None, n_frames: int, fps: float, rng) -> np.ndarray:
    """Per-frame loudness in [0, 1], smoothed like a body's response (time constant ~0.2 s)."""
    if env is None:
        t = np.arange(n_frames) / fps
        e = 0.5 + 0.5 * _smooth_wave(rng, t, 0.1, 0.8, 3)
    else:
        e = np.asarray(env, dtype=np.float64).ravel()
        if len(e) != n_frames:  # resample any envelope length to one value per frame
            src = np.linspace(0, 1, max(len(e), 1))
            e = np.interp(np.linspace(0, 1, n_frames), src, e if len(e) else np.zeros(1))
        e = np.clip(e, 0, 1)
    alpha = 1 - math.exp(-1.0 / (0.2 * fps))
    out = np.empty(n_frames)
    acc = e[0] if n_frames else 0.0
    for i in range(n_frames):
        acc += alpha * (e[i] - acc)
        out[i] = acc
    return out


# ---------------------------------------------------------------- backgrounds

def _rand_colour(rng, lo=0, hi=255) -> np.ndarray:
    return rng.uniform(lo, hi, 3)


BACKGROUND_KINDS: tuple[str, ...] = ("linear", "radial", "room", "noise", "shapes", "stripes", "value_noise",
                                     "wood", "bricks", "curtain", "bokeh", "sky", "fabric")


def _octaves(rng, n: int, base: int = 3, octaves: int = 4, persistence: float = 0.5) -> np.ndarray:
    """(n, n) multi-octave value noise scaled to [0, 1]."""
    out = np.zeros((n, n), np.float32)
    w = 1.0
    for o in range(octaves):
        k = base * 2 ** o
        g = Image.fromarray(rng.random((k + 1, k + 1)).astype(np.float32))
        out += w * np.asarray(g.resize((n, n), Image.BICUBIC), np.float32)
        w *= persistence
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _lerp3(t: np.ndarray, cols) -> np.ndarray:
    """Map t in [0, 1] through a piecewise-linear palette of colours."""
    cols = np.asarray(cols, np.float32)
    x = np.clip(t, 0, 1) * (len(cols) - 1)
    i = np.minimum(x.astype(int), len(cols) - 2)
    f = (x - i)[..., None]
    return cols[i] * (1 - f) + cols[i + 1] * f


def _textured_background(kind: str, rng, n: int) -> np.ndarray:
    """The procedural textures: noise, wood, bricks/tiles, curtain, bokeh, sky, fabric."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    if kind == "value_noise":  # clouds / plaster / marble-ish blotches through a 3-colour palette
        t = _octaves(rng, n, int(rng.integers(2, 6)), 4, rng.uniform(0.35, 0.65))
        if rng.random() < 0.3:  # marble veins
            t = 0.5 + 0.5 * np.sin((xx * rng.uniform(3, 9) + t * rng.uniform(3, 8)) * math.pi)
        return _lerp3(t, [_rand_colour(rng) for _ in range(3)])
    if kind == "wood":  # planks with warped grain and dark gaps
        light = np.array([rng.uniform(150, 230), rng.uniform(90, 170), rng.uniform(40, 110)])
        dark = light * rng.uniform(0.4, 0.7)
        vertical = rng.random() < 0.5
        u, v = (xx, yy) if vertical else (yy, xx)
        planks = int(rng.integers(3, 9))
        idx = np.floor(u * planks)
        offs = rng.uniform(0, 10, planks + 1).astype(np.float32)[idx.astype(int)]
        warp = _octaves(rng, n, 3, 3)
        g = np.sin((u * rng.uniform(20, 60) + warp * rng.uniform(2, 6) + offs + v * rng.uniform(0, 3)) * math.pi)
        t = (0.5 + 0.5 * g) ** rng.uniform(1, 3)
        bg = _lerp3(t, [dark, light]) * (0.85 + 0.3 * rng.random(planks + 1)[idx.astype(int)])[..., None]
        gap = np.abs(u * planks - np.round(u * planks)) < 0.02 * planks
        return np.where(gap[..., None], dark * 0.5, bg)
    if kind == "bricks":  # running-bond bricks or a square tile grid, with mortar and per-piece colour
        tiles = rng.random() < 0.35
        rows = int(rng.integers(5, 16))
        cols = rows if tiles else max(2, int(rows * rng.uniform(0.35, 0.6)))
        ry = yy * rows
        shift = 0 if tiles else (np.floor(ry) % 2) * 0.5
        rx = xx * cols + shift
        base = _rand_colour(rng, 60, 230) if tiles else np.array([rng.uniform(120, 200), rng.uniform(50, 100),
                                                                   rng.uniform(30, 80)])
        ids = (np.floor(ry) * 131 + np.floor(rx)).astype(int) % 997
        jit = rng.uniform(0.75, 1.2, 997).astype(np.float32)
        if tiles and rng.random() < 0.5:  # two-colour tiles
            other = _rand_colour(rng, 30, 230)
            pick = ((np.floor(ry) + np.floor(rx)) % 2)[..., None]
            bgc = base * (1 - pick) + other * pick
        else:
            bgc = np.broadcast_to(base, (n, n, 3))
        bg = bgc * jit[ids][..., None] * (0.9 + 0.2 * _octaves(rng, n, 8, 2))[..., None]
        mortar_w = rng.uniform(0.04, 0.12)
        mortar = (np.abs(ry - np.round(ry)) < mortar_w) | (np.abs(rx - np.round(rx)) < mortar_w * rows / cols)
        return np.where(mortar[..., None], _rand_colour(rng, 150, 230) * 0.9, bg)
    if kind == "curtain":  # stage curtain with folds, a floor, and a spotlight
        col = np.array([rng.uniform(80, 200), rng.uniform(0, 40), rng.uniform(0, 60)])
        if rng.random() < 0.4:
            col = col[rng.permutation(3)]
        folds = rng.uniform(6, 18)
        ph = _octaves(rng, n, 2, 2) * 2
        f = np.abs(np.sin((xx * folds + ph + 0.2 * yy) * math.pi)) ** rng.uniform(0.5, 1.2)
        bg = col * (0.35 + 0.75 * f)[..., None]
        if rng.random() < 0.6:
            floor_y = rng.uniform(0.7, 0.9)
            floor = np.array([rng.uniform(60, 140), rng.uniform(40, 90), rng.uniform(20, 60)]) * (0.6 + 0.6 * yy)[..., None]
            bg = np.where((yy > floor_y)[..., None], floor, bg)
        cx, cy = rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.7)
        d = ((xx - cx) ** 2 + ((yy - cy) * 1.3) ** 2) / rng.uniform(0.03, 0.12)
        return bg * (0.45 + rng.uniform(0.6, 1.0) * np.exp(-d))[..., None]
    if kind == "bokeh":  # out-of-focus room: dark gradient with soft discs of light
        c1, c2 = _rand_colour(rng, 0, 120), _rand_colour(rng, 0, 160)
        base = c1 + (c2 - c1) * yy[..., None]
        layer = Image.new("RGB", (n, n), (0, 0, 0))
        d = ImageDraw.Draw(layer)
        warm = rng.random() < 0.5
        for _ in range(int(rng.integers(10, 40))):
            r = rng.uniform(0.02, 0.12) * n
            x, y = rng.uniform(-0.05, 1.05, 2) * n
            c = (rng.uniform(180, 255), rng.uniform(120, 230), rng.uniform(40, 140)) if warm else _rand_colour(rng, 60, 255)
            k = rng.uniform(0.2, 0.7)
            d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v * k) for v in c))
        layer = layer.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 6)))
        return base + np.asarray(layer, np.float32) * rng.uniform(0.6, 1.0)
    if kind == "sky":  # gradient sky with clouds, maybe a sunset, maybe a horizon
        sunset = rng.random() < 0.3
        top = np.array([rng.uniform(20, 80), rng.uniform(60, 130), rng.uniform(150, 230)])
        low = np.array([rng.uniform(230, 255), rng.uniform(120, 190), rng.uniform(60, 120)]) if sunset else \
            np.array([rng.uniform(170, 220), rng.uniform(200, 235), rng.uniform(230, 255)])
        bg = top + (low - top) * (yy ** rng.uniform(0.6, 1.5))[..., None]
        cloud = np.clip((_octaves(rng, n, int(rng.integers(2, 5)), 4) - rng.uniform(0.4, 0.7)) * 3, 0, 1)
        bg = bg + (rng.uniform(220, 255) - bg) * cloud[..., None] * rng.uniform(0.6, 1.0)
        if rng.random() < 0.5:  # distant hills or a city line
            h = rng.uniform(0.65, 0.9) - 0.08 * _octaves(rng, n, 2, 3)[0]
            ground = _rand_colour(rng, 10, 110)
            bg = np.where((yy > h[None, :])[..., None], ground, bg)
        return bg
    # fabric: a woven texture, plain or tartan
    f = rng.uniform(40, 120)
    c1, c2 = _rand_colour(rng), _rand_colour(rng)
    weave = 0.5 + 0.5 * np.sin(xx * f * math.pi) * np.sin(yy * f * math.pi)
    if rng.random() < 0.5:  # tartan: coloured bands in both directions
        bands = rng.uniform(3, 10)
        bx = (np.sin(xx * bands * math.pi * 2) > rng.uniform(-0.3, 0.5)).astype(np.float32)
        by = (np.sin(yy * bands * math.pi * 2) > rng.uniform(-0.3, 0.5)).astype(np.float32)
        t = (bx + by) / 2
        bg = _lerp3(t, [c1, (c1 + c2) / 2, c2])
    else:
        bg = np.broadcast_to(c1, (n, n, 3)).astype(np.float32)
    bg = bg * (0.8 + 0.25 * weave)[..., None]
    folds = 0.85 + 0.3 * _octaves(rng, n, 2, 2)
    return bg * folds[..., None]


def _background(rng, n: int, kinds=None) -> tuple[np.ndarray, str]:
    """(n, n, 3) float32 background and its kind (drawn from `kinds`, default all BACKGROUND_KINDS)."""
    kind = str(rng.choice(list(kinds or BACKGROUND_KINDS)))
    if kind not in BACKGROUND_KINDS:
        raise ValueError(f"unknown background kind {kind!r}; kinds: {', '.join(BACKGROUND_KINDS)}")
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    c1, c2 = _rand_colour(rng), _rand_colour(rng)
    if kind not in ("linear", "radial", "room", "noise", "shapes", "stripes"):
        bg = _textured_background(kind, rng, n)
    elif kind == "linear":
        a = rng.uniform(0, 2 * math.pi)
        u = (xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a) + 0.5
        bg = c1 + (c2 - c1) * np.clip(u, 0, 1)[..., None]
    elif kind == "radial":  # a spotlight on a stage
        cx, cy = rng.uniform(0.3, 0.7, 2)
        r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(0.4, 0.9)
        bg = c1 + (c2 * 0.3 - c1) * np.clip(r, 0, 1)[..., None]
    elif kind == "room":  # a wall and a floor, with vertical panels or wallpaper stripes on the wall
        horizon = rng.uniform(0.55, 0.8)
        wall = c1 * (1 + 0.08 * np.sin(xx * rng.uniform(10, 60)))[..., None]
        floor = c2 * (0.7 + 0.3 * yy)[..., None] * (1 + 0.1 * np.sin(yy * rng.uniform(40, 120)))[..., None]
        bg = np.where((yy < horizon)[..., None], wall, floor)
    elif kind == "noise":  # blotchy texture: upsampled coarse noise mapped between two colours
        k = int(rng.integers(3, 10))
        coarse = rng.random((k, k)).astype(np.float32)
        up = np.asarray(Image.fromarray(coarse).resize((n, n), Image.BICUBIC))
        bg = c1 + (c2 - c1) * np.clip(up, 0, 1)[..., None]
    elif kind == "stripes":
        a = rng.uniform(0, math.pi)
        u = (xx * math.cos(a) + yy * math.sin(a)) * rng.uniform(4, 16)
        sq = (np.sin(u * 2 * math.pi) > 0).astype(np.float32) if rng.random() < 0.5 else \
            0.5 + 0.5 * np.sin(u * 2 * math.pi)
        bg = c1 + (c2 - c1) * 0.5 * sq[..., None]
    else:  # "shapes": a plain or gradient base with random ellipses, boxes and polygons, maybe blurred
        bg = c1 + (c2 - c1) * yy[..., None]
        img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(4, 14))):
            col = tuple(int(v) for v in _rand_colour(rng))
            x0, y0 = rng.uniform(-0.2, 1.0, 2) * n
            w, h = rng.uniform(0.05, 0.5, 2) * n
            shape = rng.integers(3)
            if shape == 0:
                d.ellipse([x0, y0, x0 + w, y0 + h], fill=col)
            elif shape == 1:
                d.rectangle([x0, y0, x0 + w, y0 + h], fill=col)
            else:
                pts = [tuple(p) for p in rng.uniform(-0.1, 1.1, (int(rng.integers(3, 6)), 2)) * n]
                d.polygon(pts, fill=col)
        if rng.random() < 0.6:
            img = img.filter(ImageFilter.GaussianBlur(rng.uniform(1, 6)))
        bg = np.asarray(img, dtype=np.float32)
    bg = bg.astype(np.float32)
    if rng.random() < 0.7:  # sensor-like grain, fixed for the clip
        bg = bg + rng.normal(0, rng.uniform(1, 7), (n, n, 1)).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.float32), kind


def _body_layer(rng, w: int, h: int) -> Image.Image:
    """An abstract player (torso and head) drawn behind the instrument, RGBA."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    cloth = tuple(int(v) for v in _rand_colour(rng, 10, 230)) + (255,)
    tone = rng.uniform(0.35, 1.0)
    skin = (int(235 * tone), int(190 * tone), int(160 * tone), 255)
    d.rounded_rectangle([w * 0.15, h * 0.32, w * 0.85, h * 1.05], radius=w * 0.15, fill=cloth)
    d.ellipse([w * 0.33, h * 0.02, w * 0.67, h * 0.32], fill=skin)
    hair = tuple(int(v) for v in _rand_colour(rng, 0, 120)) + (255,)
    d.chord([w * 0.33, h * 0.0, w * 0.67, h * 0.3], 180, 360, fill=hair)
    return img


# ---------------------------------------------------------------- compositing

def _alpha_bbox(a: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero((a > ALPHA_THRESHOLD).any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero((a > ALPHA_THRESHOLD).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _occluder_mask(kind: str, S: int, cx: float, cy: float, hw: float, hh: float, ang: float) -> np.ndarray:
    """(S, S) float32 coverage in [0, 1] of a rotated bar or an ellipse, with a 1-pixel soft edge."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    c, s = math.cos(ang), math.sin(ang)
    u, v = dx * c + dy * s, -dx * s + dy * c
    if kind == "ellipse":
        r = np.sqrt((u / hw) ** 2 + (v / hh) ** 2)
        return np.clip((1 - r) * min(hw, hh) + 0.5, 0, 1)
    return np.clip(hw - np.abs(u) + 0.5, 0, 1) * np.clip(hh - np.abs(v) + 0.5, 0, 1)


def _degrade_probs(degrade) -> dict[str, float]:
    if degrade is False:
        return {k: 0.0 for k in DEGRADATIONS}
    probs = dict(DEGRADATIONS)
    if isinstance(degrade, Mapping):
        bad = set(degrade) - set(DEGRADATIONS)
        if bad:
            raise ValueError(f"unknown degradations {sorted(bad)}; known: {', '.join(DEGRADATIONS)}")
        probs.update({k: float(v) for k, v in degrade.items()})
    return probs


def _line_kernel(length: int, angle: float) -> ImageFilter.Kernel:
    """A 5x5 motion-blur kernel: a line of `length` (2-5) pixels at `angle`."""
    k = np.zeros((5, 5), np.float32)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length):
        k[round(2 + t * math.sin(angle)), round(2 + t * math.cos(angle))] = 1
    return ImageFilter.Kernel((5, 5), k.ravel().tolist(), float(k.sum()))


def _degrade(frames: np.ndarray, rng, probs: dict[str, float], boxes: np.ndarray, visible: np.ndarray) -> dict:
    """Camera and lighting degradations of a whole clip, in place; one setting per clip. Returns what
    was applied. Every random draw happens whatever the probabilities, so options do not shift the rng.
    Each frame goes once through a chain of PIL operations in C (~1 ms a frame with everything on)."""
    T, S = frames.shape[0], frames.shape[1]
    u = rng.random(len(DEGRADATIONS))
    on = {k: bool(u[i] < probs[k]) for i, k in enumerate(DEGRADATIONS)}
    done: dict = {}
    ops = []
    # Photometric: brightness, contrast, gamma, colour temperature and tint, as one lookup table per channel.
    b, c, g = rng.uniform(0.65, 1.3), rng.uniform(0.65, 1.4), float(np.exp(rng.uniform(-0.45, 0.45)))
    temp, tint = rng.uniform(-1, 1), rng.uniform(-0.08, 0.08)
    if on["photometric"]:
        gains = np.array([1 + 0.15 * temp, 1 + tint, 1 - 0.15 * temp])
        x = np.arange(256) / 255.0
        lut = np.clip(((x[None] - 0.5) * c + 0.5) * b * gains[:, None], 0, 1) ** g
        lut = (lut * 255 + 0.5).astype(np.uint8).ravel().tolist()
        ops.append(lambda im, i: im.point(lut))
        done["photometric"] = {"brightness": round(b, 3), "contrast": round(c, 3), "gamma": round(g, 3),
                                   "temperature": round(temp, 3), "tint": round(tint, 3)}
    # Spatial gain <= 1: vignette (dark corners) and a spotlight on one player (dim surroundings).
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S
    vs = rng.uniform(0.25, 0.7)
    who = int(rng.integers(boxes.shape[0]))
    lo, sig = rng.uniform(0.35, 0.75), rng.uniform(0.18, 0.4)
    gain = None
    if on["vignette"]:
        gain = 1 - vs * np.clip(((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2, 0, 1) ** 1.2
        done["vignette"] = {"strength": round(vs, 3)}
    if on["spotlight"] and visible[who].any():
        bb = boxes[who][visible[who]].mean(0) / S
        cx, cy = (bb[0] + bb[2]) / 2, (bb[1] + bb[3]) / 2
        spot = lo + (1 - lo) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sig ** 2))
        gain = spot if gain is None else gain * spot
        done["spotlight"] = {"player": who, "floor": round(lo, 3), "radius": round(sig, 3)}
    if gain is not None:
        gim = Image.fromarray((np.clip(gain, 0, 1) * 255 + 0.5).astype(np.uint8)).convert("RGB")
        ops.append(lambda im, i: ImageChops.multiply(im, gim))
    # Blur: defocus (Gaussian) or camera motion (a short line kernel, once or twice).
    rad = rng.uniform(0.6, 2.2)
    mlen, mang, mpass = int(rng.integers(3, 6)), rng.uniform(0, math.pi), int(rng.integers(1, 3))
    if on["defocus"]:
        blur = ImageFilter.GaussianBlur(rad)
        ops.append(lambda im, i: im.filter(blur))
        done["defocus"] = {"radius": round(rad, 3)}
    elif on["motion_blur"]:
        kern = _line_kernel(mlen, mang)
        ops.append(lambda im, i: im.filter(kern) if mpass == 1 else im.filter(kern).filter(kern))
        done["motion_blur"] = {"length": mlen * mpass, "angle": round(math.degrees(mang), 1)}
    # Sensor noise: two noise fields, cropped at random offsets per frame, added and subtracted in C.
    sigma, chroma = rng.uniform(2, 12), rng.uniform(0, 0.6)
    m = 16
    offs = rng.integers(0, m, (T, 3))
    if on["noise"]:
        bank = rng.normal(0, sigma, (2, S + m, S + m, 1)) + rng.normal(0, sigma * chroma, (2, S + m, S + m, 3))
        pos = [Image.fromarray(np.clip(f, 0, 255).astype(np.uint8)) for f in bank]
        neg = [Image.fromarray(np.clip(-f, 0, 255).astype(np.uint8)) for f in bank]

        def noise(im, i):
            o = offs[i]
            box = (int(o[1]), int(o[0]), int(o[1]) + S, int(o[0]) + S)
            k = int(o[2]) % 2
            return ImageChops.subtract(ImageChops.add(im, pos[k].crop(box)), neg[k].crop(box))
        ops.append(noise)
        done["noise"] = {"sigma": round(sigma, 3), "chroma": round(chroma, 3)}
    # JPEG compression artefacts: each frame through a PIL JPEG round trip.
    q = int(rng.integers(15, 91))
    if on["jpeg"]:
        def jpeg(im, i):
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=q)
            buf.seek(0)
            return Image.open(buf).convert("RGB")
        ops.append(jpeg)
        done["jpeg"] = {"quality": q}
    if ops:
        for i in range(T):
            im = Image.fromarray(frames[i])
            for op in ops:
                im = op(im, i)
            frames[i] = np.asarray(im)
    return done


def render_scene_detailed(pictures: list[np.ndarray], n_frames: int, fps: float, size: int = 224,
                          rng: np.random.Generator | None = None,
                          envelopes: list[np.ndarray] | None = None, *,
                          occlusion_prob: float = 0.35, body_prob: float = 0.5,
                          background: np.ndarray | tuple[int, int, int] | None = None,
                          background_kinds: Sequence[str] | None = None,
                          layout: str | None = None, scale: str | None = None,
                          out_of_frame_prob: float = 0.15,
                          degrade: Mapping[str, float] | bool | None = None) -> Scene:
    """Render a clip of len(pictures) players (1 = solo, 2 = duet, 3 = trio), left to right.

    pictures: RGBA uint8 arrays (any square size, e.g. pictures.load_rgba(pic, 224)).
    envelopes[p]: per-frame RMS loudness of player p's stem in [0, 1] (any length: resampled to
    n_frames); None gives each player a random slow envelope. rng None means default_rng(0).
    background_kinds: the kinds the background is drawn from (default all BACKGROUND_KINDS).
    layout: "columns" (each player inside its own column, no overlap, whole in frame) or "free"
    (varied spacing, may overlap a little, players may be cut by the frame edge, each with
    probability out_of_frame_prob); None draws it (LAYOUT_PROBS). scale: "small", "medium" or
    "large" (instrument size in the frame; "large" may exceed it); None draws it (SCALE_PROBS).
    degrade: per-clip degradation probabilities overriding DEGRADATIONS (a dict of some of its
    keys); False turns them all off, True/None keeps the defaults. Boxes are computed before any
    degradation. Scene.info records background, layout, scale, out_of_frame and degradations.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    P, T, S = len(pictures), int(n_frames), int(size)
    if P < 1:
        raise ValueError("render_scene needs at least one picture")
    if envelopes is not None and len(envelopes) != P:
        raise ValueError(f"{len(envelopes)} envelopes for {P} pictures")
    t = np.arange(T) / float(fps)

    probs = _degrade_probs(degrade)
    if layout is None:
        layout = str(rng.choice(list(LAYOUT_PROBS), p=list(LAYOUT_PROBS.values())))
    band = scale if scale is not None else str(rng.choice(list(SCALE_PROBS), p=list(SCALE_PROBS.values())))
    if layout not in LAYOUT_PROBS or band not in SCALE_PROBS:
        raise ValueError(f"layout {layout!r} / scale {band!r}: choose from {list(LAYOUT_PROBS)} / {list(SCALE_PROBS)}")
    # Camera: background rendered with a margin, the view drifts slowly inside it.
    pad = max(2, round(0.04 * S))
    # The background has its own generator, so its kind and options do not move the rest of the clip.
    bg_rng = np.random.default_rng(int(rng.integers(2 ** 63)))
    if background is None:
        bg, bg_kind = _background(bg_rng, S + 2 * pad, background_kinds)
    elif np.ndim(background) == 1:
        bg, bg_kind = np.broadcast_to(np.asarray(background, np.float32), (S + 2 * pad, S + 2 * pad, 3)), "given"
    else:
        img = np.asarray(background, np.float32)[:S, :S]
        bg, bg_kind = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge"), "given"
    cam_x = np.round(pad + pad * 0.8 * _smooth_wave(rng, t, 0.03, 0.15)).astype(int)
    cam_y = np.round(pad + pad * 0.5 * _smooth_wave(rng, t, 0.03, 0.15)).astype(int)

    order = [int(i) for i in rng.permutation(P)]  # order[k] = picture shown in column k
    slot_w = S / P
    # Free layout: centres left to right with a random spacing (tight to spread out) and jitter.
    spacing = rng.uniform(0.6, 1.1) * S / P
    x_free = S / 2 + (np.arange(P) - (P - 1) / 2) * spacing + rng.uniform(-0.15, 0.15, P) * spacing
    x_free += rng.uniform(-1, 1) * max(0.0, (S - spacing * P) / 2)
    out_of_frame = []
    players = []
    for col, p in enumerate(order):
        src = np.asarray(pictures[p])
        if src.ndim != 3 or src.shape[2] != 4:
            raise ValueError(f"picture {p} is not RGBA (H, W, 4): {src.shape}")
        bb = _alpha_bbox(src[..., 3]) or (0, 0, src.shape[1], src.shape[0])
        src = src[bb[1]:bb[3], bb[0]:bb[2]]
        if rng.random() < 0.5:  # players hold instruments either way round
            src = src[:, ::-1]
        # Stage lighting: the picture a little darker or brighter than drawn, and slightly tinted.
        gain = rng.uniform(0.75, 1.1) * rng.uniform(0.93, 1.07, 3)
        src = np.concatenate([np.clip(src[..., :3] * gain, 0, 255), src[..., 3:]], axis=-1).astype(np.uint8)
        h0, w0 = src.shape[:2]
        # Motion parameters of this player.
        sway_amp = rng.uniform(2, 6)
        rock_amp = rng.uniform(3, 9)
        base_ang = rng.uniform(-8, 8)
        max_ang = math.radians(abs(base_ang) + sway_amp + rock_amp)
        scale_var = 0.06
        # Size: the instrument's largest rotated extent must fit its column (duets must not overlap)
        # and the frame height, with room for drift and bob.
        rot_w = w0 * math.cos(max_ang) + h0 * math.sin(max_ang)
        rot_h = h0 * math.cos(max_ang) + w0 * math.sin(max_ang)
        lo, hi = SCALE_RANGES[band]
        want = rng.uniform(lo, hi) * S / (1 if P == 1 else (0.8 * P if layout == "columns" else 0.65 * P))
        if layout == "columns":
            k_base = min(want / max(w0, h0), 0.9 * slot_w / rot_w, 0.82 * S / rot_h) / (1 + scale_var + 0.04)
        else:
            k_base = want / max(w0, h0) / (1 + scale_var + 0.04)
            if band != "large":
                k_base = min(k_base, 0.82 * S / rot_h / (1 + scale_var + 0.04))
        bob = rng.uniform(0.02, 0.05) * S
        drift = rng.uniform(0.01, 0.03) * S
        half_w = rot_w * k_base * (1 + scale_var + 0.04) / 2
        half_h = rot_h * k_base * (1 + scale_var + 0.04) / 2
        lo_x = col * slot_w + half_w + drift + pad
        hi_x = (col + 1) * slot_w - half_w - drift - pad
        cx = (lo_x + hi_x) / 2 if lo_x >= hi_x else rng.uniform(lo_x, hi_x)
        lo_y, hi_y = half_h + bob + pad, S - half_h - drift - pad
        cy = S / 2 if lo_y >= hi_y else rng.uniform(lo_y, hi_y)
        if layout == "free":
            cx = float(x_free[col])
            if rng.random() < out_of_frame_prob:  # cut by an edge: 15-50 % of the instrument outside
                side = int(rng.integers(3)) if P == 1 else (0 if col == 0 else 1 if col == P - 1 else 2)
                f = rng.uniform(0.15, 0.5)
                if side == 0:
                    cx = pad + half_w * (1 - 2 * f)
                elif side == 1:
                    cx = S + pad - half_w * (1 - 2 * f)
                else:
                    cy = S + pad - half_h * (1 - 2 * f)
                out_of_frame.append(p)
        env = _envelope(None if envelopes is None else envelopes[p], T, fps, rng)
        beat = rng.uniform(0.8, 2.2)  # Hz: rocking with the music
        ang = (base_ang + sway_amp * _smooth_wave(rng, t, 0.15, 0.5, 1)
               + rock_amp * env * np.sin(2 * math.pi * beat * t + rng.uniform(0, 2 * math.pi)))
        scale = k_base * (1 + scale_var * _smooth_wave(rng, t, 0.05, 0.3) + 0.04 * env)
        px = cx + drift * _smooth_wave(rng, t, 0.05, 0.3)
        # Louder -> the instrument is raised and bounces on the beat (image y grows downwards).
        py = cy - bob * env + 0.3 * bob * env * np.sin(2 * math.pi * beat * t * 2)
        py = py + 0.5 * drift * _smooth_wave(rng, t, 0.05, 0.3)
        # Work from a copy resized to the largest scale needed: the per-frame warp then only shrinks a
        # little, so bilinear sampling does not alias. Premultiplied alpha keeps edges clean.
        k_max = float(scale.max())
        R = (max(1, math.ceil(w0 * k_max)), max(1, math.ceil(h0 * k_max)))
        work = Image.fromarray(np.ascontiguousarray(src)).convert("RGBa").resize(R, Image.LANCZOS)
        body = None
        if rng.random() < body_prob:
            bw, bh = int(min(slot_w * 0.8, rot_w * k_base * 1.2)), int(rot_h * k_base * 1.3)
            body = _body_layer(rng, max(bw, 8), max(bh, 8))
        players.append({"p": p, "work": work, "ang": ang, "scale": scale / k_max,
                            "px": px, "py": py, "body": body})

    # Occluder: one shape crossing the view during part of the clip.
    occ = None
    if T > 1 and rng.random() < occlusion_prob:
        kind = str(rng.choice(["bar", "bar", "ellipse"]))
        t0 = int(rng.integers(0, max(1, T // 2)))
        t1 = int(min(T, t0 + rng.integers(max(2, T // 5), max(3, (3 * T) // 5))))
        target = players[int(rng.integers(P))]
        y_mid = float(target["py"].mean())
        x_mid = float(target["px"].mean())
        if kind == "bar":
            hw, hh = rng.uniform(0.03, 0.07) * S, rng.uniform(0.35, 0.7) * S
            ang0 = math.radians(rng.uniform(-20, 20))
        else:
            hw = hh = rng.uniform(0.08, 0.16) * S
            ang0 = 0.0
        start = np.array([x_mid + rng.uniform(-0.35, -0.1) * S, y_mid + rng.uniform(-0.15, 0.15) * S])
        end = np.array([x_mid + rng.uniform(0.1, 0.35) * S, y_mid + rng.uniform(-0.15, 0.15) * S])
        if rng.random() < 0.5:
            start, end = end, start
        occ = {"kind": kind, "t0": t0, "t1": t1, "hw": hw, "hh": hh, "ang": ang0, "start": start, "end": end,
                   "colour": _rand_colour(rng, 0, 255).astype(np.float32)}

    frames = np.empty((T, S, S, 3), np.uint8)
    boxes = np.zeros((P, T, 4), np.float32)
    occluded = np.zeros((P, T), np.float32)
    visible = np.zeros((P, T), bool)
    bg8 = (bg + 0.5).astype(np.uint8)
    for i in range(T):
        ox, oy = int(cam_x[i]), int(cam_y[i])
        # PIL pastes with a mask blend in C and clip at the frame edges: ~20x faster than numpy here.
        frame = Image.fromarray(bg8[oy:oy + S, ox:ox + S])
        shift_x, shift_y = ox - pad, oy - pad  # scene -> frame: subtract the camera offset
        masks = []
        for pl in players:
            fx, fy = pl["px"][i] - shift_x, pl["py"][i] - shift_y
            body = pl["body"]
            if body is not None:
                frame.paste(body, (round(fx - body.size[0] / 2), round(fy - body.size[1] * 0.45)), body)
            k = float(pl["scale"][i])
            th = math.radians(float(pl["ang"][i]))
            Rw, Rh = pl["work"].size
            c, s = math.cos(th), math.sin(th)
            D = (math.ceil(k * (Rw * abs(c) + Rh * abs(s))) + 3,
                 math.ceil(k * (Rw * abs(s) + Rh * abs(c))) + 3)
            X0, Y0 = math.floor(fx - D[0] / 2), math.floor(fy - D[1] / 2)
            ux, uy = fx - X0, fy - Y0  # picture centre inside the patch, with its sub-pixel part
            # Inverse map, patch pixel (u, v) -> source pixel (x, y): rotate by -th, scale by 1/k.
            a, b = c / k, s / k
            data = (a, b, Rw / 2 - a * ux - b * uy, -b, a, Rh / 2 + b * ux - a * uy)
            patch = pl["work"].transform(D, Image.AFFINE, data, resample=Image.BILINEAR).convert("RGBA")
            frame.paste(patch, (X0, Y0), patch)
            # The box: drawn pixels of the part of the patch that lies inside the frame.
            fx0, fy0, fx1, fy1 = max(X0, 0), max(Y0, 0), min(X0 + D[0], S), min(Y0 + D[1], S)
            mask = None
            if fx0 < fx1 and fy0 < fy1:
                pa = np.asarray(patch.getchannel("A"))[fy0 - Y0:fy1 - Y0, fx0 - X0:fx1 - X0]
                bb = _alpha_bbox(pa)
                if bb is not None:
                    boxes[pl["p"], i] = (fx0 + bb[0], fy0 + bb[1], fx0 + bb[2], fy0 + bb[3])
                    visible[pl["p"], i] = True
                    mask = ((fx0, fy0, fx1, fy1), pa > ALPHA_THRESHOLD)
            masks.append(mask)
        if occ is not None and occ["t0"] <= i < occ["t1"]:
            u = (i - occ["t0"]) / max(1, occ["t1"] - occ["t0"] - 1)
            cx, cy = occ["start"] + (occ["end"] - occ["start"]) * u - (shift_x, shift_y)
            m = _occluder_mask(occ["kind"], S, float(cx), float(cy), occ["hw"], occ["hh"], occ["ang"])
            arr = np.asarray(frame, dtype=np.float32)
            arr += (occ["colour"] - arr) * m[..., None]
            frames[i] = (np.clip(arr, 0, 255) + 0.5).astype(np.uint8)
            for pl, mk in zip(players, masks):
                if mk is not None:
                    (fx0, fy0, fx1, fy1), inst = mk
                    occluded[pl["p"], i] = float((m[fy0:fy1, fx0:fx1] * inst).sum() / max(inst.sum(), 1))
        else:
            frames[i] = np.asarray(frame)

    applied = _degrade(frames, rng, probs, boxes, visible)
    info = {"order": order, "background": bg_kind, "layout": layout, "scale": band, "out_of_frame": out_of_frame,
                "degradations": applied,
                "occluder": None if occ is None else {"kind": occ["kind"], "frames": (occ["t0"], occ["t1"])}}
    return Scene(frames, boxes, occluded, visible, info)


def render_scene(pictures: list[np.ndarray], n_frames: int, fps: float, size: int = 224,
                 rng: np.random.Generator | None = None,
                 envelopes: list[np.ndarray] | None = None, **options) -> tuple[np.ndarray, np.ndarray]:
    """frames (n_frames, size, size, 3) uint8 and boxes (P, n_frames, 4) float32 x0, y0, x1, y1:
    the tight pixel extent of each instrument's drawn pixels, clipped to the frame (see
    render_scene_detailed for occlusion and layout information, and the keyword options)."""
    sc = render_scene_detailed(pictures, n_frames, fps, size, rng, envelopes, **options)
    return sc.frames, sc.boxes
