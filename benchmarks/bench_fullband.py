"""Full-band stems, measured: `avsep separate` on every duet of a 44.1 kHz stereo corpus split, at the
input's rate and channels and at the models' 11,025 Hz mono, with the clips' true boxes and with the
shipped detector, scored against the clips' ground-truth stems.

Make the corpus with `avsep data synth -o C --size default --seed 0 --sample-rate 44100 --stereo --split
test --kind duet` (the default recipe's 21 test duets, rendered at 44.1 kHz stereo). For each clip and each
box source, `avsep separate CLIP -o TMP --full-length --format wav --sample-rate input|model` runs in a
child process (`--boxes CLIP.json` for the true boxes); its identities are matched to the ground-truth
players by box overlap (`evaluate.match_identities`, as benchmarks/bench_pipeline_duets.py does).

What is measured, per ground-truth player (a player with no matching identity scores NaN and counts as
not found):

* SDR (full band): BSS Eval v3 SDR (`metrics.bss_eval`, 512-tap distortion filter, the player's own
  reference as the only source, as `evaluate.score_clip_stems` does) of each channel of the stem against
  the same channel of the player's 44.1 kHz stereo reference stem, averaged over the two channels (dB).
* SDR (11,025 Hz): the same clip separated with `--sample-rate model` (mono, 11,025 Hz) against the
  reference read the way `avsep eval` reads it (`media.read_audio_file`: stereo downmixed to mono,
  resampled to 11,025 Hz).
* SDR (full band, heard at 11,025 Hz): the full-band stem read like the reference of the line above
  (downmixed, resampled to 11,025 Hz) and scored the same way: what the full-band path changes below
  5.5 kHz; if it equals the 11,025 Hz figure, any loss in the full-band figure comes from the band above
  5.5 kHz and from the channels.
* SDR (full band, mono): the full-band stem and reference averaged over their channels, at 44.1 kHz: the
  band above 5.5 kHz without the channels. (The models compute one mask from the mono mixture; applied
  to each channel, it leaves more of the other player in the channel where this player is quieter,
  which the per-channel figure counts and the mono one does not.)
* "other": the same SDR against the other player's reference (a stem that holds the wrong instrument
  scores high there); "mixture": the input mixture itself scored against the player's reference, the
  no-separation baseline at each rate.
* High-band share: of the energy above 5.5 kHz (the band the models never see: 11,025 Hz has its
  Nyquist at 5,512.5 Hz) that the clip's stems carry, the fraction that sits in the right stem. Each
  time-frequency bin (STFT, 2,048-sample Hann window, hop 512, per channel) belongs to the source whose
  reference has more energy there (the ideal binary mask's owner); the right stem of a bin is its
  owner's stem. share = sum over bins >= 5.5 kHz of |S_owner|^2 / sum over bins >= 5.5 kHz and over
  every stem written (unmatched identities included) of |S|^2. A missing stem counts as silence. Two stems
  that each hold half of the mixture score 50 %, a perfect separation 100 %. The same share below
  5.5 kHz is printed beside it, so the high band can be compared with the band the masks were computed on.

    python benchmarks/bench_fullband.py --root CORPUS44K [--split test] [--method avpc] [--weights NAME]
        [--detect-imgsz N] [--json out.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SPLIT_HZ = 5500.0
N_FFT, HOP = 2048, 512


# --- scoring (pure functions of arrays: tested on synthetic signals in tests/test_synth.py) -------------


def channel_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """BSS Eval v3 SDR (dB) of `est` against `ref`, both (C, n) (or (n,)), one reference per channel,
    averaged over the channels; the shorter signal sets the length. NaN when BSS Eval marks the pair
    invalid (a silent or non-finite signal)."""
    from avsep_cli import metrics

    ref, est = np.atleast_2d(np.asarray(ref, np.float64)), np.atleast_2d(np.asarray(est, np.float64))
    if ref.shape[0] != est.shape[0]:
        raise ValueError(f"{ref.shape[0]} reference channels, {est.shape[0]} estimate channels")
    n = min(ref.shape[1], est.shape[1])
    res = metrics.bss_eval(torch.from_numpy(ref[:, None, :n].copy()), torch.from_numpy(est[:, None, :n].copy()))
    vals = res.sdr[:, 0].numpy()
    return float(np.mean(vals)) if np.all(np.isfinite(vals)) else math.nan


def _stft_power(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, n) -> |STFT|^2 (C, F, T) and the bin frequencies (F,)."""
    from scipy.signal import stft

    f, _, z = stft(np.atleast_2d(x).astype(np.float64), fs=sr, window="hann", nperseg=N_FFT, noverlap=N_FFT - HOP,
                   boundary=None, padded=True)
    return np.abs(z) ** 2, f


def band_shares(refs: list[np.ndarray], stems: list[np.ndarray | None], extra: list[np.ndarray], sr: int,
                split_hz: float = SPLIT_HZ) -> dict:
    """Energy allocation of the stems by time-frequency owner (see the module docstring).

    refs[j]: (C, n) reference of player j; stems[j]: (C, n) the stem matched to player j, or None (not
    found: silence); extra: stems matched to no player. Returns {"high": share above split_hz, "low": share
    below, "high_energy_db": the stems' energy above split_hz relative to all their energy}; a share is NaN
    when the stems carry no energy in that band."""
    n = min([r.shape[-1] for r in refs] + [s.shape[-1] for s in stems if s is not None] + [e.shape[-1] for e in extra])
    cut = lambda x: np.atleast_2d(x)[:, :n]  # noqa: E731
    ref_p = [_stft_power(cut(r), sr)[0] for r in refs]
    owner = np.argmax(np.stack(ref_p), axis=0)  # (C, F, T)
    stem_p = [None if s is None else _stft_power(cut(s), sr)[0] for s in stems]
    extra_p = [_stft_power(cut(e), sr)[0] for e in extra]
    freqs = _stft_power(np.zeros((1, n)), sr)[1]
    high = (freqs >= split_hz)[None, :, None]
    right = np.zeros_like(ref_p[0])
    total = np.zeros_like(ref_p[0])
    for j, p in enumerate(stem_p):
        if p is None:
            continue
        right += np.where(owner == j, p, 0.0)
        total += p
    for p in extra_p:
        total += p
    out = {}
    for name, band in (("high", high), ("low", ~high)):
        t = float(np.sum(np.where(band, total, 0.0)))
        out[name] = float(np.sum(np.where(band, right, 0.0)) / t) if t > 0 else math.nan
    all_e = float(np.sum(total))
    out["high_energy_db"] = 10 * math.log10(max(float(np.sum(np.where(high, total, 0.0))), 1e-30) / all_e) if all_e > 0 else math.nan
    return out


# --- running avsep separate ------------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(C, n) float64 and the rate."""
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float64", always_2d=True)
    return x.T, sr


def read_track(video: Path) -> tuple[np.ndarray, int]:
    """A video's audio track as (C, n) float64 at its own rate (media reads mono only)."""
    import av

    with av.open(str(video)) as c:
        s = c.streams.audio[0]
        sr, ch = s.codec_context.sample_rate, s.codec_context.channels
        rs = av.AudioResampler(format="fltp", layout="stereo" if ch == 2 else "mono", rate=sr)
        parts = [f.to_ndarray() for fr in c.decode(s) for f in rs.resample(fr)]
    return np.concatenate(parts, axis=1).astype(np.float64), sr


def separate(clip, out: Path, rate: str, true_boxes: bool, args) -> tuple[dict, float]:
    """Run `avsep separate` on one clip; returns (manifest, wall seconds)."""
    cmd = [sys.executable, "-m", "avsep_cli", "separate", str(clip.video), "-o", str(out), "--force", "--full-length",
           "--format", "wav", "--sample-rate", rate, "--method", args.method, "--device", args.device]
    if args.weights:
        cmd += ["--weights", args.weights]
    if true_boxes:
        cmd += ["--boxes", str(clip.sidecar)]
    elif args.detect_imgsz:
        cmd += ["--detect-imgsz", str(args.detect_imgsz)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"avsep separate failed on {clip.video} ({' '.join(cmd[3:])}): {proc.stderr.strip()}")
    return json.loads((out / "manifest.json").read_text()), wall


def score_clip(clip, tmp: Path, true_boxes: bool, args) -> list[dict]:
    from avsep_cli import dsp, media
    from avsep_cli.evaluate import match_identities

    side = json.loads(clip.sidecar.read_text())
    classes = list(clip.classes)
    refs_full = {c: read_wav(clip.stems[c])[0] for c in classes}
    ref_sr = read_wav(clip.stems[classes[0]])[1]
    refs_model = {c: media.read_audio_file(clip.stems[c], sr=dsp.SAMPLE_RATE).astype(np.float64) for c in classes}
    mix_full = read_track(clip.video)[0]
    mix_model = media.load_audio(clip.video, sr=dsp.SAMPLE_RATE).astype(np.float64)
    rows = {c: {"clip": clip.id, "class": c, "boxes": "true" if true_boxes else "detector"} for c in classes}
    for rate in ("input", "model"):
        out = tmp / f"{clip.id}-{rate}-{'true' if true_boxes else 'det'}"
        manifest, wall = separate(clip, out, rate, true_boxes, args)
        owner = match_identities(manifest["identities"], side)
        files = {i["name"]: out / i["file"] for i in manifest["identities"] if i.get("file")}
        stems = {name: read_wav(p) for name, p in files.items()}
        refs = refs_full if rate == "input" else refs_model
        mix = mix_full if rate == "input" else mix_model
        for c in classes:
            other = next(k for k in classes if k != c)
            r = rows[c]
            r[f"wall_{rate}"] = wall
            r[f"sdr_mix_{rate}"] = channel_sdr(refs[c], mix)
            if c in owner:
                est, sr = stems[owner[c]]
                if rate == "input" and (sr != ref_sr or est.shape[0] != np.atleast_2d(refs[c]).shape[0]):
                    sys.exit(f"{files[owner[c]]}: {sr} Hz x {est.shape[0]} channels, the input has "
                             f"{ref_sr} Hz x {np.atleast_2d(refs[c]).shape[0]}: is this the full-band separator?")
                r[f"sdr_{rate}"] = channel_sdr(refs[c], est)
                r[f"sdr_other_{rate}"] = channel_sdr(refs[other], est)
                if rate == "input":
                    low = media.read_audio_file(files[owner[c]], sr=dsp.SAMPLE_RATE).astype(np.float64)
                    r["sdr_input_at_model"] = channel_sdr(refs_model[c], low)
                    r["sdr_input_mono"] = channel_sdr(np.atleast_2d(refs[c]).mean(0), est.mean(0))
            else:
                r[f"sdr_{rate}"] = r[f"sdr_other_{rate}"] = math.nan
                if rate == "input":
                    r["sdr_input_at_model"] = r["sdr_input_mono"] = math.nan
            r[f"found_{rate}"] = c in owner
        if rate == "input":
            matched = [stems[owner[c]][0] if c in owner else None for c in classes]
            extra = [s for name, (s, _) in stems.items() if name not in owner.values()]
            shares = band_shares([refs_full[c] for c in classes], matched, extra, ref_sr)
            mix_shares = band_shares([refs_full[c] for c in classes], [mix_full / 2, mix_full / 2], [], ref_sr)
            for c in classes:
                rows[c].update(hb_share=shares["high"], lb_share=shares["low"], hb_energy_db=shares["high_energy_db"],
                               hb_share_half_mix=mix_shares["high"])
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    return list(rows.values())


def _m(rows: list[dict], key: str) -> float:
    v = np.array([r[key] for r in rows], np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan


def table(rows: list[dict], n_clips: int) -> str:
    lines = ["| boxes | stems | SDR own | SDR other | SDR of the mixture | SDR own, mono | SDR own heard at 11,025 Hz "
             "mono | players found | energy above 5.5 kHz in the right stem | below 5.5 kHz | `avsep separate` per clip |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for src in ("true", "detector"):
        sub = [r for r in rows if r["boxes"] == src]
        if not sub:
            continue
        for rate, label in (("input", "44.1 kHz stereo (input)"), ("model", "11,025 Hz mono (model)")):
            found = sum(bool(r[f"found_{rate}"]) for r in sub)
            wall = np.mean(list({r["clip"]: r[f"wall_{rate}"] for r in sub}.values()))
            hb = f"{_m(sub, 'hb_share') * 100:.1f} %" if rate == "input" else "n/a (nothing above 5.5 kHz)"
            lb = f"{_m(sub, 'lb_share') * 100:.1f} %" if rate == "input" else "n/a"
            low = _m(sub, "sdr_input_at_model" if rate == "input" else "sdr_model")
            mono = f"{_m(sub, 'sdr_input_mono'):.2f} dB" if rate == "input" else "(mono)"
            lines.append(f"| {src} | {label} | {_m(sub, f'sdr_{rate}'):.2f} dB | {_m(sub, f'sdr_other_{rate}'):.2f} dB | "
                         f"{_m(sub, f'sdr_mix_{rate}'):.2f} dB | {mono} | {low:.2f} dB | {found}/{len(sub)} | {hb} | {lb} | "
                         f"{wall:.1f} s |")
    lines.append(f"\n{n_clips} duet clips. SDR: BSS Eval v3, mean over players (at 44.1 kHz also over the two "
                 f"channels). Energy in the right stem: two stems holding half the mixture each would score "
                 f"{_m(rows, 'hb_share_half_mix') * 100:.1f} % above 5.5 kHz.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="a 44.1 kHz stereo corpus (avsep data synth --sample-rate 44100 --stereo)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--method", default="avpc", help="default: avpc, the CLI's default method")
    ap.add_argument("--weights", default=None, help="default: the method's shipped default (registry.default_for)")
    ap.add_argument("--detect-imgsz", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--boxes", choices=("both", "true", "detector"), default="both")
    ap.add_argument("--limit", type=int, default=0, help="only the first N clips (0: all)")
    ap.add_argument("--json", default=None, help="write every row here")
    ap.add_argument("--keep", default=None, help="keep the stems in this folder")
    args = ap.parse_args()

    from avsep_cli import registry
    from avsep_cli.layout import open_corpus

    corpus = open_corpus(args.root)
    if (corpus.recipe or {}).get("channels") != 2:
        print(f"warning: {args.root} is not a stereo corpus (made without --stereo)", file=sys.stderr)
    clips = sorted(corpus.clips(split=args.split, kind="duet"), key=lambda c: c.id)
    if args.limit:
        clips = clips[: args.limit]
    if not clips:
        sys.exit(f"no duet clip in split {args.split!r} of {args.root}")
    weights = args.weights or (registry.default_for(args.method) or {}).get("name", "(method default)")
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="avsep-fullband-"))
    tmp.mkdir(parents=True, exist_ok=True)
    rows, t0 = [], time.perf_counter()
    try:
        for src in (("true", "detector") if args.boxes == "both" else (args.boxes,)):
            for clip in clips:
                for r in score_clip(clip, tmp, src == "true", args):
                    rows.append(r)
                    print(f"{r['clip']} {r['boxes']:>8} {r['class']:>15}  full band {r['sdr_input']:6.2f} dB "
                          f"(mono {r['sdr_input_mono']:6.2f}, at 11025 Hz {r['sdr_input_at_model']:6.2f} dB)  "
                          f"11025 Hz path {r['sdr_model']:6.2f} dB  "
                          f"high band right {r['hb_share'] * 100:5.1f} %", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.method} ({weights}), {args.root} split {args.split}, {time.perf_counter() - t0:.0f} s\n")
    print(table(rows, len(clips)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"method": args.method, "weights": weights, "root": str(args.root), "split": args.split,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
