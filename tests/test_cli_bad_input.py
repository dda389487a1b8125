"""Bad input through the real CLI: exit code 2, one `avsep: error:` line naming the problem, and no
output left behind. Also `avsep data extract` on good input, since it is the command that writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import mediagen as mg
from avsep_cli import media
from clihelp import assert_one_error, run


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    mg.make_media(d / "good.mp4")
    mg.make_media(d / "silent.mp4", audio=False)
    mg.make_media(d / "sound.wav", video=False)
    mg.make_media(d / "short.mp4", seconds=0.5)
    (d / "junk.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 30000, dtype=np.uint8).tobytes())
    data = (d / "good.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 2])  # the moov index is at the end: gone
    mg.make_media(d / "good.mkv")
    data = (d / "good.mkv").read_bytes()
    (d / "cut.mkv").write_bytes(data[: len(data) // 2])  # opens fine, fails halfway through
    (d / "folder.mp4").mkdir()
    return d


def tree(path: Path) -> list[str]:
    """Every file and folder under `path`, hidden ones included."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize(
    "name, phrase",
    [
        ("missing.mp4", "no such file"),
        ("folder.mp4", "is a folder"),
        ("junk.mp4", "not a media file"),
        ("cut.mp4", "truncated"),
        ("silent.mp4", "has no audio stream"),
        ("sound.wav", "has no video stream (frames are needed)"),
        ("short.mp4", "s long; at least 1.0 s is needed"),
    ],
)
def test_separate_rejects_bad_input(capsys, inputs, tmp_path, name, phrase):
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "separate", inputs / name, "-o", out)
    assert_one_error(rc, err, phrase)
    assert str(inputs / name) in err and stdout == ""
    assert not out.exists()


def test_short_clip_reports_its_length(capsys, inputs, tmp_path):
    rc, _, err = run(capsys, "separate", inputs / "short.mp4", "-o", tmp_path / "o")
    length = media.probe(inputs / "short.mp4").duration
    assert_one_error(rc, err, f"is {length:.2f} s long")
    assert 0.45 < length < 0.6


@pytest.mark.parametrize(
    "name, extra, phrase",
    [
        ("cut.mkv", [], "truncated"),  # fails during decoding, after the output folder exists
        ("silent.mp4", ["--no-frames"], "has no audio stream"),
        ("sound.wav", [], "has no video stream (frames are needed)"),
        ("junk.mp4", [], "not a media file"),
    ],
)
def test_extract_rejects_bad_input_and_leaves_nothing(capsys, inputs, tmp_path, name, extra, phrase):
    out = tmp_path / "out"
    rc, _, err = run(capsys, "data", "extract", inputs / name, "-o", out, *extra)
    assert_one_error(rc, err, phrase)
    assert tree(out) == []


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_extract_unwritable_output_folder(capsys, inputs, tmp_path, where):
    if where == "under_a_file":
        blocker = tmp_path / "not_a_folder"
        blocker.write_text("x")
        out = blocker / "out"
    else:
        out = Path("/proc/avsep-test-output")  # root cannot create folders in /proc either
    rc, _, err = run(capsys, "data", "extract", inputs / "good.mp4", "-o", out)
    assert_one_error(rc, err, "cannot write to output folder")
    assert not out.exists()
    if where == "under_a_file":
        assert os.listdir(tmp_path) == ["not_a_folder"]


def test_extract_output_is_a_file(capsys, inputs, tmp_path):
    out = tmp_path / "out"
    out.write_text("x")
    rc, _, err = run(capsys, "data", "extract", inputs / "good.mp4", "-o", out)
    assert_one_error(rc, err, "output path is not a folder")
    assert out.read_text() == "x"


def test_extract_writes_then_refuses_then_forces(capsys, inputs, tmp_path):
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "data", "extract", inputs / "good.mp4", "-o", out)
    assert rc == 0, err
    assert "good.wav" in stdout
    wav, sr = sf.read(out / "good.wav", dtype="float32")
    assert sr == media.SAMPLE_RATE and wav.ndim == 1 and abs(len(wav) - 3 * sr) <= 1
    assert sf.info(out / "good.wav").subtype == "PCM_16"
    np.testing.assert_allclose(wav, media.load_audio(inputs / "good.mp4"), atol=1 / 32767)
    jpgs = sorted((out / "good_frames").iterdir())
    assert [p.name for p in jpgs] == [f"{k:06d}.jpg" for k in range(24)]  # 3 s at 8 fps
    from PIL import Image

    for k in (0, 9, 23):  # t = k / 8 shows source frame floor(k * 25 / 8)
        assert mg.frame_index(np.asarray(Image.open(jpgs[k]))) == int(k * 25 / 8)
    before = {p: p.read_bytes() for p in [out / "good.wav", *jpgs]}

    rc, _, err = run(capsys, "data", "extract", inputs / "good.mp4", "-o", out, "--fps", "4")
    assert_one_error(rc, err, "output exists")
    assert "--force" in err
    assert tree(out) == ["good.wav", "good_frames", *[f"good_frames/{p.name}" for p in jpgs]]
    assert all(p.read_bytes() == b for p, b in before.items())

    rc, _, err = run(capsys, "data", "extract", inputs / "good.mp4", "-o", out, "--fps", "4", "--force")
    assert rc == 0, err
    assert tree(out) == ["good.wav", "good_frames", *[f"good_frames/{k:06d}.jpg" for k in range(12)]]
    rc, _, err = run(capsys, "data", "extract", inputs / "sound.wav", "-o", out, "--no-frames")
    assert rc == 0 and (out / "sound.wav").exists() and not (out / "sound_frames").exists()


def test_console_script_prints_one_line(inputs, tmp_path):
    script = Path(sys.executable).parent / "avsep"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "avsep_cli"]
    proc = subprocess.run(
        [*cmd, "data", "extract", str(inputs / "junk.mp4"), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"avsep: error: {inputs / 'junk.mp4'}: not a media file FFmpeg can read, or truncated/corrupt"]
    assert not (tmp_path / "o").exists()
