"""Turn a folder of downloaded MUSIC videos into the corpus layout, and read Sound-of-Pixels index CSVs.

MUSIC (Zhao et al., 2018) is published as JSON lists of YouTube ids, `{"videos": {"<class>": [ids]}}`
for solos and `{"videos": {"<classA> <classB>": [ids]}}` for duets; the videos themselves have to be
downloaded by each user (yt-dlp, see docs/corpus.md), and some always fail (removed or private). The
`organise` function finds each listed id among the downloaded files (any video suffix, any sub-folder),
links or copies it to `ROOT/solo/<class>/<id>.<ext>` or `ROOT/duet/<a>+<b>/<id>.<ext>` (classes in
lower_snake_case, a duet's pair sorted), and writes `ROOT/splits/{train,val,test}.csv` in the format of
the synthetic corpus, so `layout.open_corpus` and every command read the result like any other corpus.

Splits follow the convention of the papers' code: per JSON key, the first video *listed* is val, the
second test, the rest train. It is decided on the list, not on what was downloaded, so everybody's
splits agree whatever failed to download; a key whose first video is missing has no val clip.

Sound-of-Pixels and AVPC train from index CSVs instead (rows `audio_path,frames_folder,n_audio_samples,
n_frames`, no header; audio files plus folders of JPEG frames). `read_index_csv` parses them and
`check_index_rows` reports what is present; the layout here needs videos, so such an index is only read
and validated, not imported.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from avsep_cli.errors import AvsepError, OutputError
from avsep_cli.fsio import atomic_path, prepare_output_dir
from avsep_cli.layout import VIDEO_SUFFIXES

SPLIT_ORDER = ("val", "test")  # the first and second listed video of each key; the rest is train


@dataclass(frozen=True)
class Entry:
    """One listed video: its id, kind, sorted classes, split and the JSON key it came from."""

    id: str
    kind: str
    classes: tuple[str, ...]
    split: str
    key: str

    @property
    def folder(self) -> str:
        """The layout folder below ROOT: solo/<class> or duet/<a>+<b>."""
        return f"{self.kind}/{'+'.join(self.classes)}"


@dataclass
class KeyReport:
    """Per JSON key: how many ids were listed and which of them were not among the downloads."""

    key: str
    folder: str
    listed: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def found(self) -> int:
        return self.listed - len(self.missing)


@dataclass
class OrganiseResult:
    root: Path
    placed: list[tuple[Entry, Path]]  # entries found, with their path in the layout
    reports: list[KeyReport]
    splits: dict[str, int]            # clips written per split

    @property
    def missing(self) -> int:
        return sum(len(r.missing) for r in self.reports)


def normalise_class(name: str) -> str:
    """'Acoustic Guitar', 'acoustic-guitar' -> 'acoustic_guitar'."""
    out = re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")
    if not out:
        raise AvsepError(f"empty class name {name!r}")
    return out


def parse_key(key: str) -> tuple[str, tuple[str, ...]]:
    """A MUSIC JSON key -> (kind, sorted classes). Two names separated by '+' or whitespace are a duet;
    MUSIC's class names are single snake_case words, so whitespace never sits inside one."""
    parts = [p for p in re.split(r"[+\s]+", key.strip()) if p]
    if len(parts) == 1:
        return "solo", (normalise_class(parts[0]),)
    if len(parts) == 2:
        return "duet", tuple(sorted(normalise_class(p) for p in parts))
    raise AvsepError(f"MUSIC key {key!r} names {len(parts)} classes; expected one (solo) or two (duet)")


def read_music_json(path: str | os.PathLike) -> list[Entry]:
    """The entries of one MUSIC JSON file, in listed order, with their split."""
    path = Path(path)
    if not path.is_file():
        raise AvsepError(f"--json {path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AvsepError(f"--json {path}: not readable JSON ({str(e).splitlines()[0]})") from None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict) or not videos:
        raise AvsepError(f'--json {path}: not a MUSIC list '
                         f'(expected {{"videos": {{"<class>": ["<youtube id>", ...]}}}})')
    out: list[Entry] = []
    for key, ids in videos.items():
        if not isinstance(ids, list) or not all(isinstance(i, str) and i.strip() for i in ids):
            raise AvsepError(f"--json {path}: videos[{key!r}] is not a list of YouTube ids")
        try:
            kind, classes = parse_key(key)
        except AvsepError as e:
            raise AvsepError(f"--json {path}: {e}") from None
        seen: set[str] = set()
        for vid in ids:
            vid = vid.strip()
            if vid in seen:  # a repeated id would only duplicate a clip; its first place decides the split
                continue
            if "/" in vid or vid.startswith("."):
                raise AvsepError(f"--json {path}: {vid!r} is not a YouTube id")
            n = len(seen)
            seen.add(vid)
            out.append(Entry(vid, kind, classes, SPLIT_ORDER[n] if n < len(SPLIT_ORDER) else "train", key))
    return out


def find_videos(videos: str | os.PathLike) -> dict[str, Path]:
    """id -> video file under `videos` (searched recursively; the file name is `<id>.<ext>`). When one
    id has several files (e.g. .mp4 and .webm) the first suffix in `layout.VIDEO_SUFFIXES` wins;
    hidden files and yt-dlp's unfinished `.part` files are ignored."""
    videos = Path(videos)
    if not videos.is_dir():
        raise AvsepError(f"--videos {videos}: no such folder")
    rank = {s: i for i, s in enumerate(VIDEO_SUFFIXES)}
    found: dict[str, Path] = {}
    for p in sorted(videos.rglob("*")):
        suffix = p.suffix.lower()
        if suffix not in rank or p.name.startswith(".") or not p.is_file():
            continue
        old = found.get(p.stem)
        if old is None or rank[suffix] < rank[old.suffix.lower()]:
            found[p.stem] = p
    return found


def _place(src: Path, dst: Path, copy: bool) -> None:
    """Link (absolute symlink) or copy `src` to `dst`, atomically replacing whatever is there."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        if copy:
            shutil.copyfile(src, tmp)
        else:
            tmp.unlink()
            os.symlink(src.resolve(), tmp)


def _write_split(path: Path, rows: list[tuple[Entry, Path]], root: Path) -> None:
    # The synthetic corpus' columns: id, kind, classes joined by '+', video relative to ROOT.
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "kind", "classes", "video"])
            for e, p in rows:
                w.writerow([e.id, e.kind, "+".join(e.classes), p.relative_to(root).as_posix()])


def organise(json_files: list[str | os.PathLike], videos: str | os.PathLike, root: str | os.PathLike, *,
             copy: bool = False, force: bool = False) -> OrganiseResult:
    """Place the downloaded videos listed in `json_files` into the layout under `root` and write its
    splits. Missing videos are counted per key and listed in `ROOT/missing.txt` (one id per line);
    they never make this fail. Without `force`, a root that already holds a layout
    (solo/, duet/ or splits/) is refused; a synthetic corpus (corpus.json) is always refused."""
    if not json_files:
        raise AvsepError("give at least one --json MUSIC list")
    root = Path(root)
    entries = [e for j in json_files for e in read_music_json(j)]
    found = find_videos(videos)
    if (root / "corpus.json").exists():
        raise AvsepError(f"{root} holds a synthetic corpus (corpus.json); organise MUSIC into another folder")
    existing = [root / d for d in ("solo", "duet", "splits") if (root / d).exists()]
    if existing and not force:
        raise OutputError(f"output exists: {existing[0]}; use --force to overwrite")
    videos_dir = Path(videos).resolve()
    for d in ("solo", "duet"):
        if videos_dir == (root / d).resolve() or (root / d).resolve() in videos_dir.parents:
            raise AvsepError(f"--videos {videos} lies inside the output layout {root / d}; use another -o")
    prepare_output_dir(root)

    reports: dict[tuple[str, str], KeyReport] = {}
    placed: list[tuple[Entry, Path]] = []
    done: set[Path] = set()
    for e in entries:
        rep = reports.setdefault((e.key, e.folder), KeyReport(e.key, e.folder))
        rep.listed += 1
        src = found.get(e.id)
        if src is None:
            rep.missing.append(e.id)
            continue
        dst = root / e.folder / f"{e.id}{src.suffix.lower()}"
        if dst in done:  # listed twice under equivalent keys (e.g. 'a b' and 'b a'): one clip
            continue
        done.add(dst)
        _place(src, dst, copy)
        placed.append((e, dst))

    (root / "splits").mkdir(exist_ok=True)
    counts = {}
    for split in ("train", "val", "test"):
        rows = [(e, p) for e, p in placed if e.split == split]
        _write_split(root / "splits" / f"{split}.csv", rows, root)
        counts[split] = len(rows)
    missing_ids = [m for r in reports.values() for m in r.missing]
    with atomic_path(root / "missing.txt") as tmp:
        tmp.write_text("".join(f"{m}\n" for m in missing_ids))
    return OrganiseResult(root, placed, list(reports.values()), counts)


# --------------------------------------------------------------------------------------------- index CSVs


@dataclass(frozen=True)
class IndexRow:
    """One row of a Sound-of-Pixels / AVPC index CSV. Paths are as written in the file."""

    audio_path: str
    frames_folder: str
    n_audio_samples: int
    n_frames: int

    @property
    def id(self) -> str:
        return Path(self.audio_path).stem

    @property
    def label(self) -> str:
        """The class (or duet pair) folder the audio file sits in."""
        return Path(self.audio_path).parent.name


def read_index_csv(path: str | os.PathLike) -> list[IndexRow]:
    """Rows `audio_path,frames_folder,n_audio_samples,n_frames` (no header). A malformed row raises
    AvsepError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise AvsepError(f"--index-csv {path}: no such file")
    rows: list[IndexRow] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for n, rec in enumerate(csv.reader(f), 1):
                if not rec or all(not c.strip() for c in rec):
                    continue
                if len(rec) != 4:
                    raise AvsepError(f"--index-csv {path}, line {n}: {len(rec)} fields; expected audio_path,"
                                     f"frames_folder,n_audio_samples,n_frames")
                a, fr, ns, nf = (c.strip() for c in rec)
                try:
                    n_samples, n_frames = int(ns), int(nf)
                except ValueError:
                    raise AvsepError(f"--index-csv {path}, line {n}: n_audio_samples and n_frames must be "
                                     f"integers, got {ns!r} and {nf!r}") from None
                if not a or not fr or n_samples < 0 or n_frames < 0:
                    raise AvsepError(f"--index-csv {path}, line {n}: empty path or negative count")
                rows.append(IndexRow(a, fr, n_samples, n_frames))
    except UnicodeDecodeError:
        raise AvsepError(f"--index-csv {path}: not a text file") from None
    if not rows:
        raise AvsepError(f"--index-csv {path}: no rows")
    return rows


@dataclass
class IndexCheck:
    rows: int
    labels: dict[str, int]          # class folder -> rows
    audio_missing: list[str]
    frames_missing: list[str]
    frames_short: list[str]         # frame folders holding fewer JPEGs than n_frames says


def _resolve(p: str, base: Path) -> Path:
    """Index paths are relative to the training code's working folder (Sound-of-Pixels: its repository,
    with the CSVs in data/): try the current folder, then the CSV's folder and each folder above it."""
    q = Path(p)
    if q.is_absolute() or q.exists():
        return q
    for b in (base, *base.parents):
        if (b / q).exists():
            return b / q
    return q


def check_index_rows(rows: list[IndexRow], csv_path: str | os.PathLike) -> IndexCheck:
    """What of an index exists on disk: audio files, frame folders and their JPEG counts."""
    base = Path(csv_path).resolve().parent
    labels: dict[str, int] = {}
    a_miss, f_miss, f_short = [], [], []
    for r in rows:
        labels[r.label] = labels.get(r.label, 0) + 1
        if not _resolve(r.audio_path, base).is_file():
            a_miss.append(r.audio_path)
        fdir = _resolve(r.frames_folder, base)
        if not fdir.is_dir():
            f_miss.append(r.frames_folder)
        elif sum(1 for p in fdir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")) < r.n_frames:
            f_short.append(r.frames_folder)
    return IndexCheck(len(rows), dict(sorted(labels.items())), a_miss, f_miss, f_short)
