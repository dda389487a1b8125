"""The reliability promises of `avsep separate` (docs/reliability.md): outputs appear all together or not
at all; a full disk or TMPDIR is one line naming the path and the cause; SIGTERM and SIGINT clean up and
say so in one line; two runs into one folder cannot both write; `--force` replaces a whole earlier run;
every tracked instrument gets a guidance crop; a damaged input never breaks the contract."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import mediagen as mg
from avsep_cli import fsio, media
from clihelp import assert_one_error, run

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "corpus" / "duet" / "cello+flute" / "syn001209.mp4"


pytestmark = pytest.mark.usefixtures("no_shipped_weights")  # tests pass their own weights (tiny_weights)


def boxes_file(path: Path, seconds: float, players=("violin", "cello"), fps: float = 4.0, frames=None) -> Path:
    """A --boxes file: each player at a fixed place, in every frame (or only in `frames`)."""
    n = int(np.ceil(seconds * fps))
    out = []
    for k, cls in enumerate(players):
        box = [10.0 + 70 * k, 20.0, 70.0 + 70 * k, 100.0]
        out.append({"class": cls, "boxes": [box if frames is None or i in frames else None for i in range(n)]})
    path.write_text(json.dumps({"fps": fps, "players": out}))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    mg.make_media(d / "duet.mp4", seconds=4.0)
    return d / "duet.mp4", boxes_file(d / "boxes.json", 4.0)


def separate_args(video, out, weights, boxes, *extra):
    return ["separate", video, "-o", out, "--method", "tiny", "--weights", weights, "--boxes", boxes, *extra]


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def check_complete(out: Path) -> None:
    """A finished output folder: the manifest, every file it lists, and nothing staged or partial."""
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"] + ["manifest.json"]) == listing(out)
    for ident in manifest["identities"]:
        assert (out / ident["file"]).stat().st_size > 44


@contextlib.contextmanager
def small_disk(path: Path, kib: int):
    """A `kib` KiB tmpfs at `path` when we may mount one (root); else None (the caller injects the error)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)],
                                                   capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- disk full ---------------------------------------------------------------------------------------


def test_full_disk_while_writing_stems_is_one_line_and_leaves_nothing(capsys, monkeypatch, tiny_weights, clip, tmp_path):
    video, boxes = clip
    disk = tmp_path / "disk"
    with small_disk(disk, 96) as mounted:  # 96 KiB: the folder probe fits, two 4-s stems (88 KiB each) do not
        if not mounted:
            monkeypatch.setattr(media.WavWriter, "write", lambda self, x: self._guard(no_space))
        out = disk / "stems"
        rc, _, err = run(capsys, *separate_args(video, out, tiny_weights, boxes))
        assert_one_error(rc, err, "No space left on device" if not mounted else "no space left on device")
        assert str(out) in err
        assert listing(disk) == []  # no stems, no manifest, no staging folder, not even the folder


def test_full_tmpdir_is_one_line_naming_it(capsys, monkeypatch, tiny_weights, clip, tmp_path):
    import tempfile

    video, boxes = clip
    tmp = tmp_path / "tmp"
    with small_disk(tmp, 64) as mounted:  # a 224-px crop is 150 kB
        monkeypatch.setattr(tempfile, "tempdir", str(tmp))
        if not mounted:
            monkeypatch.setattr(np, "save", no_space)
        out = tmp_path / "stems"
        rc, _, err = run(capsys, *separate_args(video, out, tiny_weights, boxes))
        assert_one_error(rc, err, "cannot write guidance crops to")
        assert str(tmp) in err and "TMPDIR" in err and ("no space left" in err.lower())
        assert listing(tmp) == [] and not out.exists()


# --- all together or not at all ------------------------------------------------------------------------


def test_a_failure_after_the_folder_was_made_leaves_no_folder(capsys, tiny_weights, clip, tmp_path):
    video, _ = clip
    nobody = tmp_path / "nobody.json"
    nobody.write_text(json.dumps({"fps": 4, "players": []}))
    out = tmp_path / "new" / "stems"
    rc, _, err = run(capsys, *separate_args(video, out, tiny_weights, nobody, "--on-empty", "error"))
    assert_one_error(rc, err, "no instrument detected")
    assert not out.exists()


def test_a_failure_in_an_existing_folder_leaves_it_as_it_was(capsys, monkeypatch, tiny_weights, clip, tmp_path):
    video, boxes = clip
    out = tmp_path / "stems"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(media.WavWriter, "close", lambda self: self._guard(no_space))
    rc, _, err = run(capsys, *separate_args(video, out, tiny_weights, boxes))
    assert_one_error(rc, err, "No space left on device")
    assert listing(out) == ["notes.txt"]


def test_force_replaces_the_whole_earlier_run(capsys, tiny_weights, clip, tmp_path):
    video, _ = clip
    out = tmp_path / "stems"
    two = boxes_file(tmp_path / "two.json", 4.0, ("violin", "cello"))
    one = boxes_file(tmp_path / "one.json", 4.0, ("flute",))
    assert run(capsys, *separate_args(video, out, tiny_weights, two, "--residual"))[0] == 0
    (out / "notes.txt").write_text("mine")
    assert run(capsys, *separate_args(video, out, tiny_weights, one, "--force"))[0] == 0
    assert listing(out) == ["flute_1.wav", "manifest.json", "notes.txt"]  # violin_1, cello_1, residual gone


def test_warnings_are_printed_once(capsys, tiny_weights, clip, tmp_path):
    video, _ = clip
    nobody = tmp_path / "nobody.json"
    nobody.write_text(json.dumps({"fps": 4, "players": []}))
    rc, _, err = run(capsys, *separate_args(video, tmp_path / "o", tiny_weights, nobody))
    assert rc == 0 and err.count("no instrument detected") == 1, err


# --- concurrency -------------------------------------------------------------------------------------


def test_a_second_run_into_a_busy_folder_is_refused(capsys, tiny_weights, clip, tmp_path):
    video, boxes = clip
    out = tmp_path / "stems"
    with fsio.OutputFolder(out) as first:  # another run holds the folder
        first.stage("violin_1.wav").write_bytes(b"first run")
        rc, _, err = run(capsys, *separate_args(video, out, tiny_weights, boxes))
        assert_one_error(rc, err, "in use by another avsep run")
        first.commit()
    assert listing(out) == ["violin_1.wav"] and (out / "violin_1.wav").read_bytes() == b"first run"


def test_a_run_refused_the_lock_leaves_the_folder_it_also_thought_it_created(tmp_path, monkeypatch):
    """Two runs that both find the folder absent both 'create' it; the one refused the lock must not remove
    it (still empty: the winner has not staged yet), or the winner's staging folder has nowhere to go."""
    out = tmp_path / "stems"
    winner = fsio.OutputFolder(out)
    winner.created = True
    fsio.prepare_output_dir(out)
    winner._lock()  # the winner holds the lock and has staged nothing yet
    real = Path.exists
    monkeypatch.setattr(Path, "exists", lambda p: False if p == out else real(p))  # the loser saw no folder
    with pytest.raises(fsio.OutputError, match="in use by another avsep run"):
        fsio.OutputFolder(out).__enter__()
    monkeypatch.setattr(Path, "exists", real)
    assert out.is_dir()
    winner.staging = Path(fsio.tempfile.mkdtemp(prefix=fsio.OutputFolder.STAGING, dir=out))
    winner.stage("violin_1.wav").write_bytes(b"winner")
    winner.commit()
    winner.__exit__(None, None, None)
    assert listing(out) == ["violin_1.wav"]


def test_two_processes_into_one_folder_never_both_write(tiny_weights, clip, tmp_path):
    video, boxes = clip
    out = tmp_path / "stems"
    env = {**os.environ, "AVSEP_WEIGHTS": str(tmp_path / "none")}
    cmd = [sys.executable, "-m", "avsep_cli", *map(str, separate_args(video, out, tiny_weights, boxes, "--force"))]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(120), p.stderr.read()) for p in procs]
    for rc, err in results:
        assert rc == 0 or (rc == 2 and err.strip().count("\n") == 0 and "in use by another avsep run" in err), err
    assert any(rc == 0 for rc, _ in results)
    check_complete(out)


# --- signals -----------------------------------------------------------------------------------------


def _start(args, tmp_path):
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "AVSEP_WEIGHTS": str(tmp_path / "none")}
    # SIGINT as in a terminal: a test run started in the background (`cmd &` in a script) ignores SIGINT,
    # and its children would inherit that
    proc = subprocess.Popen([sys.executable, "-m", "avsep_cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, tmp


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("long")
    mg.make_media(d / "long.mp4", seconds=120.0, fps=10.0)  # seconds of work after the scan starts
    return d / "long.mp4", boxes_file(d / "boxes.json", 120.0)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_during_separation_cleans_up_and_says_so_in_one_line(tiny_weights, long_clip, tmp_path, sig, code, word):
    video, boxes = long_clip
    out = tmp_path / "stems"
    proc, tmp = _start(separate_args(video, out, tiny_weights, boxes), tmp_path)
    deadline = time.monotonic() + 120
    while not any(tmp.glob("avsep-crops-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the scan has started: staging folder and crop store exist
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(sig)
    rc = proc.wait(60)
    err = proc.stderr.read()
    assert rc == code and err.strip() == f"avsep: {word}", err
    assert not [p for p in listing(tmp) if "avsep" in p] and not out.exists()  # (torch keeps caches there)


def _wait_for_our_handlers(proc, timeout: float = 60.0) -> None:
    """Until the child runs avsep's entry point: it has installed its SIGTERM handler (the interpreter
    catches SIGINT from its own start, SIGTERM only once `avsep_cli.__main__` asks). Before that the process
    is the interpreter starting up (`site`, runpy), where no program can turn Ctrl-C into anything but
    Python's own traceback; on a loaded machine that can last longer than any fixed delay."""
    mask = 1 << (signal.SIGTERM - 1)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if caught & mask:
            return
        time.sleep(0.001)


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3, 0.8, 1.5])
def test_ctrl_c_during_start_up_is_one_line(tiny_weights, clip, tmp_path, delay):
    """Ctrl-C at any moment from avsep's first line on (the heavy imports take a second or more) is the one
    line; the delays count from there."""
    video, boxes = clip
    proc, _ = _start(separate_args(video, tmp_path / "o", tiny_weights, boxes), tmp_path)
    _wait_for_our_handlers(proc)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(60)
    err = proc.stderr.read()
    assert "Traceback" not in err
    assert (rc == 130 and err.strip() == "avsep: interrupted") or rc == 0, (rc, err)


def test_a_box_of_two_numbers_is_one_line(capsys, tiny_weights, clip, tmp_path):
    video, _ = clip
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fps": 4, "players": [{"class": "violin", "boxes": [[10, 20, 70, 100], [1, 2]]}]}))
    rc, _, err = run(capsys, *separate_args(video, tmp_path / "o", tiny_weights, bad))
    assert_one_error(rc, err, "frame 1")
    assert str(bad) in err and not (tmp_path / "o").exists()


# --- guidance ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("min_duration", ["1.0", "0.5"])
def test_a_track_seen_only_between_guidance_frames_gets_its_best_crop(capsys, tiny_weights, clip, tmp_path, min_duration):
    """At 4 detection fps and 1 guidance fps, guidance frames are 0, 4, 8, ...; the trombone is seen only in
    frames 1-3 and 5-7 (a 1.75-s span): it is tracked, so it must be separated."""
    video, _ = clip
    boxes = boxes_file(tmp_path / "b.json", 4.0, ("trombone",), frames={1, 2, 3, 5, 6, 7})
    out = tmp_path / "stems"
    rc, _, err = run(capsys, *separate_args(video, out, tiny_weights, boxes, "--min-duration", min_duration))
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["cls"] for i in manifest["identities"]] == ["trombone"]
    check_complete(out)


# --- damaged inputs: the contract holds at every cut point and byte flip ---------------------------------


def _damaged_inputs(tmp_path: Path) -> list[Path]:
    data = DEMO.read_bytes()
    rng = np.random.default_rng(1249)
    paths = []
    for cut in sorted(rng.integers(1, len(data), 20)):
        p = tmp_path / f"cut{cut}.mp4"
        p.write_bytes(data[:cut])
        paths.append(p)
    header = 4096  # ftyp, the moov index and the first sample tables
    for k in range(10):
        flipped = bytearray(data)
        for i in rng.integers(0, header, 1 + k % 3):
            flipped[i] ^= 1 << int(rng.integers(0, 8))
        p = tmp_path / f"flip{k}.mp4"
        p.write_bytes(bytes(flipped))
        paths.append(p)
    return paths


def test_truncated_and_bit_flipped_demo_keeps_the_contract(capsys, tiny_weights, tmp_path):
    boxes = DEMO.with_suffix(".json")
    outcomes = []
    for video in _damaged_inputs(tmp_path):
        out = tmp_path / "out" / video.stem
        rc, _, err = run(capsys, *separate_args(video, out, tiny_weights, boxes))
        outcomes.append(rc)
        if rc == 0:
            check_complete(out)
        else:
            assert_one_error(rc, err, str(video))
            assert not out.exists(), listing(out)
    assert 2 in outcomes  # damage that FFmpeg notices is reported, not separated


def test_a_ctrl_c_that_third_party_code_swallowed_still_stops_the_commit(tmp_path, monkeypatch):
    """A bare `except:` around an optional import can swallow the KeyboardInterrupt of a Ctrl-C; the signal is
    remembered, and the outputs are not committed."""
    from avsep_cli import errors

    monkeypatch.setattr(errors, "_received", [])
    out = tmp_path / "stems"
    with pytest.raises(KeyboardInterrupt):
        with fsio.OutputFolder(out) as folder:
            folder.stage("violin_1.wav").write_bytes(b"half a run")
            try:  # what such third-party code does
                errors.on_signal(signal.SIGINT, None)
            except:  # noqa: E722
                pass
            folder.commit()
    assert not out.exists()


def test_a_signal_that_lands_in_a_weakref_callback_prints_no_traceback():
    """Python cannot raise in a weakref callback (an import's module-lock clean-up is one): the signal's
    exception would be printed as "Exception ignored in ..." with a traceback. avsep's hook keeps quiet about
    it (the signal is remembered, and check_signals raises it again), and still reports anything else."""
    code = """if True:
        import signal, sys, weakref
        from avsep_cli import errors
        errors.quiet_signal_unraisable()
        class A: pass
        def by_signal(ref): errors.on_signal(signal.SIGINT, None)
        def by_bug(ref): raise ValueError("a real bug")
        a, b = A(), A()
        ra, rb = weakref.ref(a, by_signal), weakref.ref(b, by_bug)
        del a, b
        try:
            errors.check_signals()
        except KeyboardInterrupt:
            print("raised again")
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "raised again", proc.stderr
    assert "KeyboardInterrupt" not in proc.stderr and "ValueError: a real bug" in proc.stderr


def test_worker_pools_close_quietly_under_our_signal_handlers():
    """`data synth` and `data index` fork their workers with `on_signal` installed, and a closing pool
    SIGTERMs them: with plain pools that printed a `Terminated` traceback per idle worker, or hung the
    close (a worker stopped while holding the task queue's lock). `errors.worker_pool` ends them quietly."""
    code = textwrap.dedent("""
        import signal, time
        from avsep_cli import errors
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, errors.on_signal)
        for _ in range(20):  # plain pools printed tracebacks in 2-5 of 20 closes (measured; and could hang)
            with errors.worker_pool(2) as pool:
                assert pool.map(abs, range(-4, 0)) == [4, 3, 2, 1]
                time.sleep(0.1)  # both workers idle, waiting on the task queue, when the pool closes
        print("closed")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "closed\n" and proc.stderr == "", proc.stderr


def test_a_signal_during_deferred_start_up_is_held_until_it_ends(monkeypatch):
    """Ctrl-C while the CLI's imports load torch (whose C++ start-up cannot carry a Python exception) is
    remembered, and raised once the imports are done: the run still stops with its one line."""
    from avsep_cli import errors

    monkeypatch.setattr(errors, "_received", [])
    previous = signal.signal(signal.SIGINT, errors.on_signal)
    reached = False
    try:
        with pytest.raises(KeyboardInterrupt):
            with errors.deferred_signals():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler runs here, between bytecodes, and must not raise
                reached = True
        assert reached and errors._received == [signal.SIGINT] and errors._deferred == []
        with pytest.raises(KeyboardInterrupt):  # outside, the handler raises at once, as before
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, previous)
