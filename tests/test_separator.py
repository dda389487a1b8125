"""The separation pipeline (`avsep separate`, `Separator`): tracking, guidance crops, overlap-add,
outputs and edge cases, on corpus duet clips with tiny random-weight models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import mediagen as mg
from avsep_cli import checkpoint, dsp, layout, media
from avsep_cli.datasets import square_crop
from avsep_cli.separator import CropStore, InjectedBoxes, OverlapAdd, Separator, _Timer
from avsep_cli.tracking import OnlineTracker, Track, merge_tracks
from clihelp import assert_one_error, run


pytestmark = pytest.mark.usefixtures("no_shipped_weights")  # tests pass their own weights (tiny_weights)


@pytest.fixture(scope="module")
def duet(tiny_corpus):
    clips = layout.open_corpus(tiny_corpus).clips(kind="duet")
    assert clips, "the tiny corpus has duet clips"
    return clips[0]


def snr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - est) ** 2), 1e-30)))


# --- overlap-add -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [10_000, 10_300, 640])
def test_overlap_add_of_identity_estimates_is_the_mixture(n):
    """Streaming (windows processed and popped as chunks arrive) gives back the input; every window holds
    real samples only, the tail one flush with the end, unless the input is shorter than one window."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32)
    ola = OverlapAdd(1000, 500, 2)
    out, starts = [], []

    def process(windows):
        for s, w in windows:
            if n >= 1000:
                np.testing.assert_array_equal(w, x[s : s + 1000])  # no padding
            else:
                np.testing.assert_array_equal(w[:n], x)
                assert not w[n:].any()
            starts.append(s)
            ola.add(s, np.stack([w, 2 * w]))

    for chunk in np.split(x, [137, 2000, 2001, 7777]):  # uneven decode chunks
        process(ola.windows(chunk))
        out.append(ola.pop(ola.settled))
    process(ola.end())
    out = np.concatenate(out + [ola.pop(n)], axis=1)
    assert starts[0] == 0 and starts[-1] + 1000 >= n and np.all(np.diff(starts) <= 500)
    assert out.shape == (2, n)
    assert snr(x, out[0]) > 100 and snr(2 * x, out[1]) > 100


class IdentityMethod:
    """Every source's estimate is the whole mixture window."""
    name, frames_per_source, frame_gap, frame_size, segment = "identity", 3, 3.0, 64, 8192
    calls = 0

    def separate(self, batch):
        IdentityMethod.calls += 1
        b, s = batch.frames.shape[:2]
        return batch.mixture[:, None].expand(b, s, -1).clone()


def test_separator_with_identity_model_reproduces_the_mixture(tiny_weights, duet):
    sep = Separator("tiny", tiny_weights, None, full_length=True, residual=True, batch_windows=3, masks="own")
    sep.method, sep.segment = IdentityMethod(), IdentityMethod.segment  # windows of 8192 samples, hop 4096
    result = sep.separate_file(duet.video, boxes=duet.sidecar)
    mixture = media.load_audio(duet.video, dsp.SAMPLE_RATE, duration=media.probe(duet.video).duration)
    assert IdentityMethod.calls >= 2  # several batches of windows
    assert len(result.stems) == 2
    for wav in result.stems.values():
        assert wav.shape == mixture.shape
        assert snr(mixture, wav) >= 60
    assert np.allclose(result.residual, mixture - 2 * mixture, atol=1e-5)


# --- tracking ----------------------------------------------------------------------------------------


def test_tracking_follows_two_players_merges_gaps_and_drops_flickers():
    fps, n = 4.0, 40
    tracker = OnlineTracker(fps, conf=0.25, min_duration=1.0, merge_gap=3.0)
    for f in range(n):
        dets = []
        if not 10 <= f < 20:  # player A (class 0) missed for 2.5 s: longer than ByteTrack's 2-s buffer
            dets.append([10 + f, 20, 60 + f, 90, 0.9, 0])
        dets.append([120, 30 - f * 0.5, 170, 100 - f * 0.5, 0.8, 3])  # player B (class 3) drifts up
        if f in (5, 6):
            dets.append([80, 150, 100, 170, 0.5, 1])  # a two-frame false positive
        tracker.update(np.asarray(dets, dtype=float))
    identities, raw = tracker.finish()
    assert sorted(t.cls for t in identities) == [0, 3]
    a = next(t for t in identities if t.cls == 0)
    # the two halves of A merged (ByteTrack confirms a new track on its second frame: frame 20 is not in it)
    assert a.first == 0 and a.last == n - 1 and a.frames == list(range(10)) + list(range(21, n))
    assert len(tracker.raw) == 4 and len(raw) == 3 and len(set(raw.values())) == 2  # the flicker's track is dropped
    np.testing.assert_allclose(a.box_at(15), [25, 20, 75, 90])  # interpolated across the gap


def test_tracking_joins_a_player_boxed_twice_but_not_two_players_of_a_class():
    fps, n = 4.0, 24
    tracker = OnlineTracker(fps, conf=0.25, min_duration=1.0, merge_gap=3.0)
    for f in range(n):
        tracker.update(np.asarray([
            [10, 20, 60, 120, 0.9, 2],  # player A (class 2) ...
            [15, 30, 45, 80, 0.3, 2],  # ... and a second, weaker box on part of it, in the same class
            [70, 20, 120, 120, 0.8, 2],  # player B, also class 2, beside A (a tenth of it overlaps A's box)
            [150, 10, 250, 150, 0.85, 5],  # player C, a large instrument of another class ...
            [170, 40, 200, 90, 0.7, 1],  # ... with a small one of class 1 standing in front of it
        ], dtype=float))
    identities, raw = tracker.finish()
    assert len(tracker.raw) == 5
    assert sorted(t.cls for t in identities) == [1, 2, 2, 5]  # A's second box joined A; B, C and D stay
    a = min((t for t in identities if t.cls == 2), key=lambda t: t.boxes[0][0])
    assert a.frames[0] <= 1 and a.last == n - 1
    assert all(np.array_equal(b, [10, 20, 60, 120]) for b in a.boxes)  # the confident box wins every frame
    assert sum(1 for ident in raw.values() if ident == a.track_id) == 2
    # the weaker raw track is listed first, so its crops give way to A's own (CropStore.view: later wins)
    ids = [r for r, ident in raw.items() if ident == a.track_id]
    assert tracker.raw[ids[-1]].confs[0] == pytest.approx(0.9)


def test_tracking_joins_two_raw_tracks_of_a_player_that_share_a_frame():
    tracks = [Track(1, 0), Track(2, 0)]
    for f in range(0, 21):
        tracks[0].add(f, np.array([10.0, 10, 50, 90]), 0.6, 0)
    for f in range(20, 24):
        tracks[1].add(f, np.array([12.0, 10, 52, 90]), 0.8, 0)
    identities, raw = merge_tracks(tracks, 4.0, 1.0, 3.0)
    assert len(identities) == 1 and identities[0].frames == list(range(24)) and list(raw.items()) == [(2, 1), (1, 1)]
    np.testing.assert_array_equal(identities[0].boxes[20], [12, 10, 52, 90])  # frame 20: the surer box
    # with the step off (a share above 1 never happens) they stay two identities of one class
    assert len(merge_tracks([Track(1, 0, *_copy(tracks[0])), Track(2, 0, *_copy(tracks[1]))], 4.0, 1.0, 3.0,
                            duplicate_overlap=1.1)[0]) == 2


def _copy(t: Track) -> tuple:
    return list(t.frames), [b.copy() for b in t.boxes], list(t.confs), dict(t.class_votes)


# --- guidance crops ----------------------------------------------------------------------------------


def test_injected_boxes_guide_the_crops(tiny_weights, duet):
    sep = Separator("tiny", tiny_weights, None, detect_fps=4.0, guide_fps=1.0)
    side = json.loads(duet.sidecar.read_text())
    boxes = InjectedBoxes(duet.sidecar)
    duration = media.probe(duet.video).duration
    store = CropStore()
    tracks, crops = sep._scan(duet.video, duration, boxes, store, _Timer(), lambda *a: None)
    assert len(list(store.dir.iterdir())) == 6 * 3  # crops live on disk: 2 players + the whole frame, 1/s
    assert sorted(boxes.classes[t.cls] for t in tracks) == sorted(duet.classes)
    for t in tracks:
        player = next(p for p in side["players"] if p["class"] == boxes.classes[t.cls])
        assert set(crops[t.track_id]) == set(range(int(np.ceil(duration))))  # one crop per second
        for g, crop in crops[t.track_id].items():
            frame = media.frames_at(duet.video, [float(g)])[0]
            expected = square_crop(frame, player["boxes"][int(g * side["fps"])], sep.frame_size)
            assert np.array_equal(crop, expected), (t.cls, g)
    store.close()
    assert not store.dir.exists()


# --- the CLI -----------------------------------------------------------------------------------------


def test_cli_writes_one_wav_per_identity_and_a_manifest(capsys, tiny_weights, duet, tmp_path):
    out = tmp_path / "stems"
    rc, stdout, err = run(capsys, "separate", duet.video, "-o", out, "--method", "tiny", "--weights", tiny_weights,
                          "--boxes", duet.sidecar, "-v", "--residual")
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    duration = media.probe(duet.video).duration
    assert manifest["method"] == "tiny" and manifest["weights"]["sha256"] == checkpoint.sha256(tiny_weights)
    assert sorted(i["cls"] for i in manifest["identities"]) == sorted(duet.classes)
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([f"{c}_1.wav" for c in duet.classes] + ["manifest.json", "residual.wav"])
    for ident in manifest["identities"]:
        wav, sr = sf.read(out / ident["file"])
        assert sr == media.probe(duet.video).sample_rate and len(wav) == round(duration * sr)  # the input's rate
        assert ident["start"] == 0.0 and abs(ident["end"] - duration) < 0.3 and ident["boxes"]
        assert np.abs(wav).max() > 0
    assert "model" in stdout and "total" in stdout  # -v: per-stage timings


def test_existing_outputs_are_refused_without_force(capsys, tiny_weights, duet, tmp_path):
    out = tmp_path / "stems"
    args = ["separate", duet.video, "-o", out, "--method", "tiny", "--weights", tiny_weights, "--boxes", duet.sidecar]
    assert run(capsys, *args)[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    rc, _, err = run(capsys, *args)
    assert_one_error(rc, err, "exists")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert run(capsys, *args, "--force", "--video", "--plots")[0] == 0
    names = {p.name for p in out.iterdir()}
    for c in duet.classes:
        assert {f"{c}_1.mp4", f"{c}_1.png"} <= names
        info = media.probe(out / f"{c}_1.mp4")
        assert info.has_audio and info.has_video


def test_on_empty(capsys, tiny_weights, duet, tmp_path):
    nobody = tmp_path / "nobody.json"
    nobody.write_text(json.dumps({"fps": 8, "players": []}))
    base = ["separate", duet.video, "--method", "tiny", "--weights", tiny_weights, "--boxes", nobody]
    rc, _, err = run(capsys, *base, "-o", tmp_path / "a", "--on-empty", "error")
    assert_one_error(rc, err, "no instrument detected")
    assert not (tmp_path / "a" / "manifest.json").exists()
    rc, _, err = run(capsys, *base, "-o", tmp_path / "b")  # auto: whole frame for mask methods
    assert rc == 0 and "whole frame" in err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [i["cls"] for i in manifest["identities"]] == ["whole_frame"] and manifest["warnings"]
    assert (tmp_path / "b" / "whole_frame_1.wav").exists()


def test_spans_gate_the_stems(tiny_weights, duet):
    side = json.loads(duet.sidecar.read_text())
    fps = side["fps"]
    players = [{"class": p["class"], "boxes": [b if i < 3 * fps else None for i, b in enumerate(p["boxes"])]}
               if k == 0 else p for k, p in enumerate(side["players"])]  # the first player leaves at 3 s
    sep = Separator("tiny", tiny_weights, None)
    result = sep.separate_file(duet.video, boxes={"fps": fps, "players": players})
    first = next(i for i in result.identities if i.cls == side["players"][0]["class"])
    assert abs(first.end - 3.0) <= 0.25
    wav = result.stems[first.name]
    cut = int((first.end + 0.06) * dsp.SAMPLE_RATE)
    assert np.abs(wav[cut:]).max() == 0 and np.abs(wav[: cut - 2000]).max() > 0
    full = Separator("tiny", tiny_weights, None, full_length=True).separate_file(duet.video, boxes={"fps": fps, "players": players})
    assert np.abs(full.stems[first.name][cut:]).max() > 0


@pytest.mark.parametrize("name, phrase", [("silent.mp4", "has no audio stream"), ("junk.mp4", "not a media file")])
def test_bad_videos(capsys, tiny_weights, tmp_path, name, phrase):
    if name == "junk.mp4":
        (tmp_path / name).write_bytes(np.random.default_rng(0).integers(0, 256, 30000, dtype=np.uint8).tobytes())
    else:
        mg.make_media(tmp_path / name, seconds=2.0, audio=False)
    rc, _, err = run(capsys, "separate", tmp_path / name, "-o", tmp_path / "o", "--method", "tiny", "--weights", tiny_weights)
    assert_one_error(rc, err, phrase)
    assert not (tmp_path / "o").exists()


def test_missing_weights_and_detector_are_one_line(capsys, tiny_weights, duet, tmp_path):
    rc, _, err = run(capsys, "separate", duet.video, "-o", tmp_path / "o", "--method", "tiny")
    assert_one_error(rc, err, "needs --weights")
    rc, _, err = run(capsys, "separate", duet.video, "-o", tmp_path / "o", "--method", "tiny", "--weights", tiny_weights)
    assert_one_error(rc, err, "no detector")
    rc, _, err = run(capsys, "separate", duet.video, "-o", tmp_path / "o", "--method", "oracle-ibm", "--weights", tiny_weights)
    assert_one_error(rc, err, "cannot separate a video")


def test_with_a_random_weight_detector_every_identity_gets_a_wav(capsys, tiny_weights, duet, tmp_path):
    """The whole CLI path with a YOLO detector (random weights, our class names): whatever it finds and
    tracks, each identity in the manifest has its WAV of the input's length."""
    from ultralytics.nn.tasks import DetectionModel

    from avsep_cli.detection import default_classes

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=len(default_classes()), verbose=False)
    model.names = dict(enumerate(default_classes()))
    det = tmp_path / "random-yolo.pt"
    torch.save({"model": model, "train_args": {"imgsz": 64, "task": "detect"}}, det)
    out = tmp_path / "stems"
    rc, _, err = run(capsys, "separate", duet.video, "-o", out, "--method", "tiny", "--weights", tiny_weights,
                     "--detector", det, "--conf", "0.01", "--min-duration", "0.5")
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["detector"]["sha256"] == checkpoint.sha256(det) and manifest["identities"]
    info = media.probe(duet.video)
    n = round(info.duration * info.sample_rate)  # full band: the input's rate
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(i["file"] for i in manifest["identities"])
    for ident in manifest["identities"]:
        assert sf.info(out / ident["file"]).frames == n
        assert ident["cls"] in default_classes() + ("whole_frame",)
