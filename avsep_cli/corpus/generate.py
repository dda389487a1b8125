"""Build the offline corpus: plan every clip from (seed, clip index), render the clips in parallel, write
them in the MUSIC layout with their ground truth, and write the splits.

Planning happens once in the parent process and is cheap: the recipe of a size preset gives the clip
list, and each clip's choices (split, classes, SoundFont, program, picture, piece and part) come from a
generator seeded with (seed, index) alone, so a clip is the same whatever the worker count or the
order of work, and a resumed run skips finished clips (a clip is finished when its JSON sidecar,
written last, exists). Workers render sound (FluidSynth), room and noise, pictures in motion, and
encode the mp4 (H.264 224 px at 8 fps with FLAC audio, so the decoded mixture is the sum of the
stems). ``ROOT/corpus.json`` holds the recipe; a second run into the same folder must use the same one.

By default the audio is mono at 22,050 Hz. ``sample_rate`` renders everything (FluidSynth included, no
resampling) at another rate, and ``stereo`` places the players: each one's direct sound is panned by its
position in the picture, the room reverb is drawn per channel (``room.place``), and stems and mixture
are stereo. ``only_splits`` / ``only_kinds`` render a subset of the planned clips: every clip is still
planned from (seed, index), so a rendered clip is the same as in the full corpus. Left at their
defaults, these options add nothing to the recipe, so a default corpus is unchanged byte for byte.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from avsep_cli.corpus import classes as C
from avsep_cli.corpus import scores
from avsep_cli.corpus import splits
from avsep_cli.errors import AvsepError, worker_pool
from avsep_cli.fsio import atomic_path, prepare_output_dir

log = logging.getLogger("avsep")

FORMAT = "avsep-synth-corpus"
VERSION = 2  # 2: family-held-out splits, broad pictures and sound
SR = 22050          # default corpus audio rate; the models resample to 11025
SR_RANGE = (11025, 96000)  # below the models' rate the corpus would lack band; FluidSynth stops at 96 kHz
FPS = 8.0           # the models sample frames at <= 8 fps; more frames only cost encode time and disk
FRAME = 224         # frame side in pixels (the detector's and the models' input size)
LABEL_FRAMES = 3    # frames per clip with YOLO box labels


@dataclass(frozen=True)
class Preset:
    classes: tuple[str, ...]
    solos_per_class: int
    duets: int
    folk_pieces: int
    chorale_pieces: int
    split_cycle: tuple[str, ...]   # split of the j-th clip of a class / of the duets, cyclically


_TEN = ("train",) * 8 + ("val", "test")
PRESETS: dict[str, Preset] = {
    # Four well separated timbres: enough for the tests' classifier with 20 clips in < 60 s.
    "tiny": Preset(("flute", "piano", "trumpet", "violin"), 4, 4, 20, 10, ("train", "train", "val", "test")),
    "small": Preset(tuple(sorted(C.CLASSES)), 10, 30, 120, 40, _TEN),
    "default": Preset(tuple(sorted(C.CLASSES)), 70, 210, 600, 150, _TEN),
}


@dataclass
class Plan:
    """Everything the workers need; also what corpus.json records."""
    root: Path
    recipe: dict
    clips: list[dict] = field(default_factory=list)


def _clip_path(root: Path, clip: dict) -> Path:
    """The mp4 path of a planned clip (the other files sit beside it, sharing the stem)."""
    folder = clip["classes"][0] if clip["kind"] == "solo" else "+".join(clip["classes"])
    return root / clip["kind"] / folder / f"{clip['id']}.mp4"


def _stable_order(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()


def split_pictures(pics: dict[str, list]) -> tuple[dict[str, dict[str, list]], dict[str, str]]:
    """Pictures of each class by split, holding out whole picture families (`splits.assign_picture_families`),
    and the split of every family. A split a class has no family in borrows the train pictures (only
    possible when a class has fewer than three families, e.g. a corpus made with --licence)."""
    from avsep_cli.corpus.pictures import family

    classes_of: dict[str, set[str]] = {}
    for c, ps in pics.items():
        for p in ps:
            classes_of.setdefault(family(p), set()).add(c)
    fam_split = splits.assign_picture_families(classes_of, lambda f: f.startswith("drawing"))
    out = {}
    for c, ps in pics.items():
        by = {s: sorted((p for p in ps if fam_split[family(p)] == s), key=lambda p: p.key) for s in splits.SPLITS}
        for s in ("val", "test"):
            by[s] = by[s] or by["train"]
        out[c] = by
    return out, fam_split


def plan(root: Path, *, size: str = "tiny", seed: int = 0, classes: list[str] | None = None,
         soundfonts: list[Path] | None = None, assets: Path | None = None, cache_dir: Path | None = None,
         licences: list[str] | None = None, solos_per_class: int | None = None, duets: int | None = None,
         duration: float = 6.0, sample_rate: int | None = None, stereo: bool = False,
         only_splits: list[str] | None = None, only_kinds: list[str] | None = None) -> Plan:
    """Check the inputs and plan every clip (no rendering). `sample_rate` (Hz, default SR) and `stereo`
    change the audio only; `only_splits` / `only_kinds` keep the clips of those splits / kinds (their
    content is the same as in the full plan)."""
    from avsep_cli.corpus import pictures as P

    if size not in PRESETS:
        raise AvsepError(f"unknown --size {size!r} (choose tiny, small or default)")
    preset = PRESETS[size]
    cls_list = C.check_classes(list(classes)) if classes else list(preset.classes)
    if duration < 1.0 or duration > 60.0:
        raise AvsepError(f"--duration {duration}: expected 1 to 60 seconds")
    rate = SR if sample_rate is None else int(sample_rate)
    if not SR_RANGE[0] <= rate <= SR_RANGE[1]:
        raise AvsepError(f"--sample-rate {sample_rate}: expected {SR_RANGE[0]} to {SR_RANGE[1]} Hz")
    for name, given, allowed in (("split", only_splits, ("train", "val", "test")), ("kind", only_kinds, ("solo", "duet"))):
        bad = sorted(set(given or ()) - set(allowed))
        if bad:
            raise AvsepError(f"--{name} {bad[0]}: expected {', '.join(allowed)}")
    fonts = C.find_fonts([Path(p) for p in soundfonts] if soundfonts else None, include_kits=True)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    n_solo = preset.solos_per_class if solos_per_class is None else int(solos_per_class)
    n_duet = preset.duets if duets is None else int(duets)
    if n_solo < 0 or n_duet < 0 or n_solo + n_duet == 0:
        raise AvsepError("nothing to generate: --solos and --duets are both 0")
    if n_duet and len(cls_list) < 2:
        raise AvsepError("duets need at least two classes")

    pics = P.discover(assets, cache_dir / "pictures", set(licences) if licences else None)
    pic_splits, fam_split = split_pictures({c: pics.get(c, []) for c in cls_list})
    for c in cls_list:
        if not pic_splits[c]["train"]:
            raise AvsepError(f"no picture of class {c!r} is available")
    folk = scores.load_pool("folk", preset.folk_pieces, cache_dir / "scores") if n_solo else []
    chorales = scores.load_pool("chorale", preset.chorale_pieces, cache_dir / "scores") if n_duet else []
    pools = {"folk": folk, "chorale": chorales}
    piece_by_split = {k: {s: [i for i in range(len(v)) if scores.piece_split(i) == s] for s in ("train", "val", "test")}
                      for k, v in pools.items()}
    # Sound: per class its timbre sources (sources.sources_for: recorded sample sets, what is derived from
    # them, our synthesis model); splits hold out whole groups (a recording set with its derived sources).
    from avsep_cli.corpus import sources as S

    font_sets: dict[str, dict] = {}
    class_sources: dict[str, list] = {}
    for c in cls_list:
        srcs = S.sources_for(c, fonts)
        class_sources[c] = srcs
        groups = {s.group: ("model" if s.kind == "model" else "font") for s in srcs}
        side = splits.assign_sample_groups(groups, prefer_test=C.TEST_SET_PREFERENCE)
        font_sets[c] = {"sources": {s.key: s.group for s in srcs}, "groups": groups, "split": side,
                        "test": sorted(g for g, v in side.items() if v == "test") or None}

    def sources_in(c: str, split: str) -> list:
        side = font_sets[c]["split"]
        own = [s for s in class_sources[c] if side[s.group] == split]
        return own or [s for s in class_sources[c] if side[s.group] == "train"]

    recipe = {
        "format": FORMAT, "version": VERSION, "size": size, "seed": int(seed), "classes": cls_list,
        "duration": float(duration), "sample_rate": rate, "fps": FPS, "frame_size": FRAME,
        "solos_per_class": n_solo, "duets": n_duet,
        "soundfonts": [{"key": f.key, "file": f.path.name, "licence": f.licence, "origin": f.origin} for f in fonts],
        "sample_sets": {c: font_sets[c] for c in cls_list},
        "pictures": {c: {s: [p.key for p in v] for s, v in pic_splits[c].items()} for c in cls_list},
        "picture_families": splits.by_split(fam_split),
        "picture_licences": sorted(licences) if licences else None,
        "pieces": {"solo": "music21 Essen/O'Neill folk tunes" if scores.music21_available() else "procedural",
                   "duet": "music21 Bach chorales" if scores.music21_available() else "procedural",
                   "folk": len(folk), "chorale": len(chorales)},
    }
    # Keys that exist only when their option is used, so the default recipe is the one of earlier versions.
    if stereo:
        recipe["channels"] = 2
        recipe["stereo"] = ("equal-power pan of each player's direct sound by its mean horizontal position "
                            "in the picture (-1 left edge, +1 right edge); room reverb drawn per channel")
    if only_splits or only_kinds:
        recipe["only"] = {"splits": sorted(set(only_splits)) if only_splits else None,
                          "kinds": sorted(set(only_kinds)) if only_kinds else None}
    pl = Plan(Path(root), recipe)

    jobs: list[tuple[str, tuple[str, ...], int]] = []
    for j in range(n_solo):
        for c in cls_list:
            jobs.append(("solo", (c,), j))
    for j in range(n_duet):
        jobs.append(("duet", (), j))
    for index, (kind, cls_t, j) in enumerate(jobs):
        rng = np.random.default_rng([int(seed), index])
        split = preset.split_cycle[j % len(preset.split_cycle)]
        if kind == "duet":
            a, b = rng.choice(len(cls_list), size=2, replace=False)
            cls_t = tuple(sorted((cls_list[int(a)], cls_list[int(b)])))
        pool = folk if kind == "solo" else chorales
        cands = piece_by_split["folk" if kind == "solo" else "chorale"][split] or list(range(len(pool)))
        piece = pool[int(cands[int(rng.integers(len(cands)))])]
        parts = [0] if kind == "solo" else sorted(int(x) for x in rng.choice(len(piece.parts), size=2, replace=False))
        players = []
        # The higher part goes to the instrument whose range sits higher.
        by_height = sorted(cls_t, key=lambda c: -(C.CLASSES[c].low + C.CLASSES[c].high))
        for k, c in enumerate(by_height):
            spec = C.CLASSES[c]
            sl = sources_in(c, split)
            src = sl[int(rng.integers(len(sl)))]
            font = S.font_for(src, c, fonts)
            picks = pic_splits[c][split]
            pic = picks[int(rng.integers(len(picks)))]
            players.append({
                "class": c, "program": int(spec.programs[int(rng.integers(len(spec.programs)))]), "bank": spec.bank,
                "soundfont": font.key if font else None, "soundfont_file": str(font.path) if font else None,
                "soundfont_licence": font.licence if font else None,
                "sample_set": src.key, "sample_group": src.group,
                "source": {"key": src.key, "group": src.group, "kind": src.kind, "licence": src.licence,
                           "description": src.description},
                "picture": {"key": pic.key, "source": pic.source, "licence": pic.licence,
                            "path": str(pic.path) if pic.path else None},
                "piece": {"id": piece.id, "title": piece.title, "source": piece.source,
                          "part": parts[k], "part_name": piece.part_names[parts[k]]},
                "notes": [list(n) for n in piece.parts[parts[k]]],
            })
        players.sort(key=lambda p: p["class"])
        cid = f"syn{index:06d}"
        pl.clips.append({"index": index, "id": cid, "kind": kind, "classes": list(cls_t), "split": split,
                         "players": players, "piece_split": scores.piece_split(pool.index(piece))})
    if only_splits or only_kinds:
        pl.clips = [c for c in pl.clips if (not only_splits or c["split"] in only_splits)
                    and (not only_kinds or c["kind"] in only_kinds)]
        if not pl.clips:
            raise AvsepError("nothing to generate: no planned clip is in the chosen --split / --kind")
    return pl


def default_cache_dir() -> Path:
    import os

    base = os.environ.get("AVSEP_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                          os.path.expanduser("~/.cache"), "avsep")
    return Path(base) / "corpus"


# ----------------------------------------------------------------------------------------- rendering

def _dry(player: dict, events, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A player's dry sound from its timbre source (sources.render), the font given by the plan."""
    from avsep_cli.corpus import sources as S

    src = S.Source(**player["source"])
    fonts = [C.font_from_path(Path(player["soundfont_file"]))] if player.get("soundfont_file") else []
    return S.render(src, player["class"], player["program"], player["bank"], events, dur, sr, rng, fonts)


def render_clip(root: Path, recipe: dict, clip: dict) -> str:
    """Render one planned clip and write its files; the sidecar goes last. Returns the clip id."""
    from avsep_cli import media
    from avsep_cli.corpus import pictures as P
    from avsep_cli.corpus import room
    from avsep_cli.corpus.render import perform
    from avsep_cli.corpus.scene import render_scene

    dur, fps, size = recipe["duration"], recipe["fps"], recipe["frame_size"]
    sr, stereo = int(recipe["sample_rate"]), recipe.get("channels", 1) == 2
    n_frames = int(round(dur * fps))
    rng = np.random.default_rng([recipe["seed"], clip["index"], 1])
    r_perf, r_room, r_scene, r_src, r_mic = rng.spawn(5)
    players = clip["players"]
    tempo = float(r_perf.uniform(76, 140))
    # Duet parts share tempo and the window start, so they play together.
    starts = sorted({n[0] for n in players[0]["notes"]})
    start_q = float(starts[int(r_perf.integers(0, max(1, len(starts) - 4)))])
    rt60, drr = float(r_room.uniform(0.2, 0.9)), float(r_room.uniform(0.0, 10.0))
    snr = float(r_room.uniform(45.0, 60.0))
    stems, meta, drys = [], [], []
    for pl in players:
        notes = [tuple(n) for n in pl["notes"]]
        perf = perform(notes, pl["class"], dur, r_perf, tempo_bpm=tempo, start_q=start_q)
        dry = _dry(pl, perf.events, dur, sr, r_src)
        if not np.any(dry):  # a window of rests: play from the start of the line instead
            perf = perform(notes, pl["class"], dur, r_perf, tempo_bpm=tempo, start_q=notes[0][0])
            dry = _dry(pl, perf.events, dur, sr, r_src)
        dry, mic = room.mic_colour(dry, sr, r_mic)
        if stereo:  # reverb only, placed and normalised once the scene (where the player stands) is known
            tails = room.stereo_reverb_tails(r_room, sr, rt60, drr)
            gain_db = float(r_room.uniform(-3.0, 3.0))
            wet = np.stack([room.reverberate(dry, t) for t in tails])  # (2, T)
            drys.append((dry, gain_db))
        else:
            ir = room.impulse_response(r_room, sr, rt60, drr)
            gain_db = float(r_room.uniform(-3.0, 3.0))
            wet = room.normalise(room.reverberate(dry, ir), sr, -20.0 + gain_db)
        stems.append(wet)
        meta.append({"mic": mic, "tempo_bpm": round(perf.tempo_bpm, 2), "articulation": perf.articulation,
                     "velocity": perf.velocity, "transpose": perf.transpose, "n_notes": len(perf.events),
                     "gain_db": round(gain_db, 2)})
    pics = [P.Picture(pl["class"], pl["picture"]["key"], pl["picture"]["source"], pl["picture"]["licence"],
                      Path(pl["picture"]["path"]) if pl["picture"]["path"] else None) for pl in players]
    pans = None
    if stereo:
        # Where a player stands decides its pan, so the picture comes first; its motion follows the
        # loudness envelope, which does not depend on the pan (the envelope is max-normalised).
        envs = [room.envelope(room.place(dry, s, 0.0).mean(0), sr, fps, n_frames) for s, (dry, _) in zip(stems, drys)]
        frames, boxes = render_scene([P.load_rgba(p, size) for p in pics], n_frames, fps, size, r_scene, envs)
        pans = [room.pan_from_boxes(bx, size) for bx in boxes]
        stems = [room.normalise(room.place(dry, s, pan), sr, -20.0 + gain_db)
                 for s, (dry, gain_db), pan in zip(stems, drys, pans)]
    # Noise floor: independent noise in each stem (and channel), so mixture = sum of stems holds exactly.
    level = room.gated_rms(sum(stems), sr) * 10 ** (-snr / 20) / np.sqrt(len(stems))
    stems = [s + (level * r_room.standard_normal(s.shape if stereo else len(s))).astype(np.float32) for s in stems]
    mix = np.sum(stems, axis=0)
    peak = float(np.max(np.abs(mix)))
    if peak > 0.9:
        stems = [s * (0.9 / peak) for s in stems]
        mix = np.sum(stems, axis=0)
    if not stereo:
        envs = [room.envelope(s, sr, fps, n_frames) for s in stems]
        frames, boxes = render_scene([P.load_rgba(p, size) for p in pics], n_frames, fps, size, r_scene, envs)

    video = _clip_path(root, clip)
    video.parent.mkdir(parents=True, exist_ok=True)
    stem_files = {}
    for pl, s in zip(players, stems):
        f = video.with_name(f"{clip['id']}.{pl['class']}.flac")
        media.write_audio(f, s, sr, subtype="PCM_16")
        stem_files[pl["class"]] = f.name
    # x264 "veryfast" halves the encode time of "medium" at the same size for these small, smooth frames
    # (39 vs 83 ms per clip, measured)
    media.write_video(video, frames, fps, audio=mix, sr=sr, acodec="flac", crf=20, preset="veryfast")
    class_index = {c: i for i, c in enumerate(recipe["classes"])}
    label_dir = video.with_name(f"{clip['id']}.labels")
    label_dir.mkdir(exist_ok=True)
    label_frames = [int(n_frames * (k + 1) / (LABEL_FRAMES + 1)) for k in range(LABEL_FRAMES)]
    for fi in label_frames:
        lines = []
        for pl, b in zip(players, boxes):
            x0, y0, x1, y1 = (float(v) for v in b[fi])
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            lines.append(f"{class_index[pl['class']]} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} "
                         f"{(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}")
        with atomic_path(label_dir / f"{fi:06d}.txt") as tmp:
            tmp.write_text("\n".join(lines) + ("\n" if lines else ""))
    sidecar = {
        "id": clip["id"], "kind": clip["kind"], "classes": clip["classes"], "split": clip["split"],
        "seed": recipe["seed"], "index": clip["index"], "duration": dur, "sample_rate": sr, "fps": fps,
        "frame_size": size, "video": video.name, "stems": stem_files, "labels": label_dir.name,
        "label_frames": label_frames,
        "room": {"rt60": round(rt60, 3), "drr_db": round(drr, 2), "noise_snr_db": round(snr, 2)},
        "mixture": "sum of the stems; each stem holds its instrument after the room plus its share of the noise",
        "players": [
            {k: v for k, v in pl.items() if k not in ("notes", "soundfont_file")}
            | {"performance": m, "boxes": [[round(float(v), 2) for v in b] for b in bx]}
            for pl, m, bx in zip(players, meta, boxes)
        ],
    }
    if stereo:  # only then: a mono sidecar stays as it was
        sidecar["channels"] = 2
        for p, pan in zip(sidecar["players"], pans):
            p["pan"] = round(pan, 3)
    for p in sidecar["players"]:
        p["picture"] = {k: v for k, v in p["picture"].items() if k != "path"}
    with atomic_path(video.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(sidecar, sort_keys=True, separators=(",", ":")) + "\n")
    return clip["id"]


def _work(args) -> str:
    root, recipe, clip = args
    return render_clip(Path(root), recipe, clip)


# ------------------------------------------------------------------------------------------ the run


def _check_recipe(root: Path, recipe: dict) -> None:
    path = root / "corpus.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            raise AvsepError(f"{path} is unreadable: not a corpus made by avsep data synth") from None
        if old.get("seed") != recipe["seed"]:
            raise AvsepError(f"{root} holds a corpus made with seed {old.get('seed')}, not {recipe['seed']}: "
                             f"use the same --seed to resume it, or another output folder")
        diff = sorted(k for k in set(old) | set(recipe) if old.get(k) != recipe.get(k))
        if diff:
            raise AvsepError(f"{root} holds a corpus made with another recipe (differs in: {', '.join(diff)}): "
                             f"resume it with the same options, or use another output folder")
    elif any((root / d).exists() for d in ("solo", "duet")):
        raise AvsepError(f"{root} holds solo/ or duet/ folders but no corpus.json: not a corpus made by "
                         f"avsep data synth; use an empty output folder")


def write_splits(root: Path, pl: Plan) -> None:
    (root / "splits").mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        with atomic_path(root / "splits" / f"{split}.csv") as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "kind", "classes", "video"])
                for c in pl.clips:
                    if c["split"] == split:
                        w.writerow([c["id"], c["kind"], "+".join(c["classes"]),
                                    _clip_path(root, c).relative_to(root).as_posix()])


def generate(root: Path, *, workers: int = 1, progress: Callable | None = None,
             on_plan: Callable[[Plan], None] | None = None, **kw) -> Plan:
    """Plan and render the corpus into `root` (see `plan` for the options). Finished clips are
    skipped. `progress(done, total)` is called after every clip; `on_plan(plan)` once the options and
    any existing corpus in `root` have been checked, before anything is rendered."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise AvsepError(f"output path is not a folder: {root}")
    pl = plan(root, **kw)
    _check_recipe(root, pl.recipe)
    prepare_output_dir(root)
    if on_plan:
        on_plan(pl)
    with atomic_path(root / "corpus.json") as tmp:
        tmp.write_text(json.dumps(pl.recipe, indent=1, sort_keys=True))
    with atomic_path(root / "classes.txt") as tmp:
        tmp.write_text("\n".join(pl.recipe["classes"]) + "\n")
    todo = [c for c in pl.clips if not _clip_path(root, c).with_suffix(".json").is_file()]
    done = len(pl.clips) - len(todo)
    if progress:
        progress(done, len(pl.clips))
    t0 = time.perf_counter()
    args = [(str(root), pl.recipe, c) for c in todo]
    if workers <= 1 or len(todo) <= 1:
        for a in args:
            _work(a)
            done += 1
            if progress:
                progress(done, len(pl.clips))
    else:
        with worker_pool(min(workers, len(todo))) as pool:
            for _ in pool.imap_unordered(_work, args, chunksize=1):
                done += 1
                if progress:
                    progress(done, len(pl.clips))
    log.info("rendered %d clips in %.1f s", len(todo), time.perf_counter() - t0)
    write_splits(root, pl)
    return pl
