"""Option values and usage errors through the real CLI: every numeric option refuses a value outside its
range (nan and inf included) at parse time with one `avsep: error:` line naming the option and the range,
exit 2; click's usage errors are one line too; --help and --version still print normally. Also the
`--boxes` file check (avsep_cli.boxes), unit-tested here."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import typer

from avsep_cli import __version__
from avsep_cli.boxes import validate_boxes
from avsep_cli.cli import app
from avsep_cli.errors import AvsepError
from clihelp import assert_one_error, run

# The arguments and required options each command needs before the option under test. None of the
# paths exist: a value that passes its range check ends in the command's own "no such ..." error.
BASE = {
    "separate": ["separate", "nothing.mp4"],
    "train": ["train"],
    "eval": ["eval", "-m", "mixture", "--data", "nowhere"],
    "data synth": ["data", "synth", "-o", "{out}"],
    "data extract": ["data", "extract", "nothing.mp4", "-o", "{out}"],
    "data index": ["data", "index", "nowhere"],
    "weights prototypes": ["weights", "prototypes", "--root", "nowhere"],
    "weights import": ["weights", "import", "--from", "avpc", "nothing.pth", "-o", "x"],
}

# (command, option, bad values, the range as the error line states it)
CASES = [
    ("separate", "--conf", ["nan", "inf", "-0.1", "1.5", "2"], "a number in [0, 1]"),
    ("separate", "--detect-fps", ["nan", "inf", "-inf", "0", "-4", "0.5", "241"], "a number in [1, 240]"),
    ("separate", "--min-duration", ["nan", "inf", "-1"], "a number >= 0"),
    ("separate", "--detect-imgsz", ["0", "-32", "100", "4128"], "a multiple of 32 in [32, 4096]"),
    ("separate", "--batch-windows", ["0", "-1"], "an integer >= 1"),
    ("separate", "--audio-stream", ["-1"], "an integer >= 0"),  # the upper end is the file's: media.probe
    ("train", "--epochs", ["0", "-1"], "an integer >= 1"),
    ("train", "--batch-size", ["0", "-8"], "an integer >= 1"),
    ("train", "--steps-per-epoch", ["0"], "an integer >= 1"),
    ("train", "--mix", ["1", "5"], "an integer in [2, 4]"),
    ("train", "--seed", ["-1", str(2**32)], "an integer in [0, 4294967295]"),
    ("train", "--data-seed", ["-1", str(2**32)], "an integer in [0, 4294967295]"),
    ("train", "--val-num", ["-1"], "an integer >= 0"),
    ("train", "--num-workers", ["-1"], "an integer >= 0"),
    ("train", "--segment", ["0", "1000", str(2**20 + 1)], "an integer in [1024, 1048576]"),
    ("train", "--max-minutes", ["nan", "inf", "-1"], "a number >= 0"),
    ("train", "--imgsz", ["0", "100", "8192"], "a multiple of 32 in [32, 4096]"),
    ("train", "--every", ["0"], "an integer >= 1"),
    ("train", "--stills", ["-1", "1000001"], "an integer in [0, 1000000]"),
    ("train", "--frame-size", ["0", "100", "2048"], "a multiple of 32 in [32, 1024]"),
    ("train", "--max-cpu-minutes", ["nan", "-inf", "-0.5"], "a number >= 0"),
    ("train", "--rcop-epochs", ["0"], "an integer >= 1"),
    ("train", "--keep-every", ["-1"], "an integer >= 0"),
    ("eval", "--mix", ["1", "0", "-2"], "an integer >= 2"),
    ("eval", "--num", ["0"], "an integer >= 1"),
    ("eval", "--seed", ["-1"], "an integer in [0, 4294967295]"),
    ("eval", "--window", ["infs", "nans", "-1s", "0.5s", "100", "abc", "s"], "or seconds (1s to 3600s)"),
    ("eval", "--plots-num", ["-1"], "an integer >= 0"),
    ("eval", "--batch-size", ["0"], "an integer >= 1"),
    ("eval", "--cycles", ["-1"], "an integer >= 0"),
    ("data synth", "--seed", ["-1"], "an integer in [0, 4294967295]"),
    ("data synth", "--workers", ["0", "-2"], "an integer >= 1"),
    ("data synth", "--solos", ["-1"], "an integer >= 0"),
    ("data synth", "--duets", ["-1"], "an integer >= 0"),
    ("data synth", "--duration", ["nan", "inf", "0.5", "61"], "a number in [1, 60]"),
    ("data synth", "--sample-rate", ["0", "-1", "8000", "11024", "96001"], "an integer in [11025, 96000]"),
    ("data extract", "--fps", ["nan", "inf", "0", "-1", "241"], "a number in (0, 240]"),
    ("data index", "--size", ["4", "2048"], "an integer in [16, 1024]"),
    ("data index", "--workers", ["0", "-1"], "an integer >= 1"),
    ("weights prototypes", "--per-class", ["0", "-1"], "an integer >= 1"),
    ("weights prototypes", "--seed", ["-1", "4294967296"], "an integer in [0, 4294967295]"),
    ("weights import", "--frame-size", ["0", "100", "2048"], "a multiple of 32 in [32, 1024]"),
]

# Numeric options checked elsewhere than at parse time (none now).
CHECKED_BY_THE_LIBRARY: set[tuple[str, str]] = set()


def _args(command: str, tmp_path: Path, *extra: str) -> list[str]:
    return [a.format(out=tmp_path / "out") for a in BASE[command]] + list(extra)


@pytest.mark.parametrize(
    "command, option, value, expected",
    [pytest.param(c, o, v, e, id=f"{c.replace(' ', '-')}{o}={v}") for c, o, values, e in CASES for v in values],
)
def test_out_of_range_value_is_one_line_naming_option_and_range(capsys, tmp_path, command, option, value, expected):
    rc, out, err = run(capsys, *_args(command, tmp_path, f"{option}={value}"))
    assert_one_error(rc, err, f"{command}: {option} {value}")
    assert expected in err and f"(see avsep {command} --help)" in err
    assert out == "" and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "command, extra, phrase",
    [
        ("separate", ["--conf", "0", "--detect-fps", "1", "--min-duration", "0", "--detect-imgsz", "32",
                      "--batch-windows", "1"], "no such file"),
        ("separate", ["--conf", "1", "--detect-fps", "240", "--min-duration", "1e6", "--detect-imgsz", "4096"],
         "no such file"),
        ("eval", ["--mix", "9", "--num", "1", "--seed", "4294967295", "--window", "1s", "--plots-num", "0",
                  "--batch-size", "1"], "nowhere"),
        ("eval", ["--cycles", "0"], "--cycles applies to AVPC only"),
        ("eval", ["--window", "11025"], "nowhere"),
        ("eval", ["--window", "3600s"], "nowhere"),
        ("data extract", ["--fps", "0.01"], "no such file"),
        ("data extract", ["--fps", "240"], "no such file"),
        ("data index", ["--size", "16", "--workers", "1"], "nowhere"),
    ],
)
def test_values_at_the_ends_of_a_range_are_accepted(capsys, tmp_path, command, extra, phrase):
    """The range is checked, not more: these fail later, in the command itself, not while parsing."""
    rc, _, err = run(capsys, *_args(command, tmp_path, *extra))
    assert_one_error(rc, err, phrase)
    assert "(see avsep" not in err  # not a usage error


def _numeric_options(typer_app: typer.Typer, prefix: str = "") -> set[tuple[str, str]]:
    """(command, option) for every int or float option of every subcommand, read from the signatures."""
    found = set()
    for info in typer_app.registered_commands:
        hints = typing.get_type_hints(info.callback)
        for name, p in inspect.signature(info.callback).parameters.items():
            kind = hints[name]
            kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)  # Optional[int] -> int
            if kind in (int, float) and isinstance(p.default, typer.models.OptionInfo):
                decls = [d for d in p.default.param_decls if d.startswith("--")]
                found.add((prefix + info.name, decls[0]))
    for group in typer_app.registered_groups:
        found |= _numeric_options(group.typer_instance, prefix + group.name + " ")
    return found


def test_every_numeric_option_has_a_range_and_a_case():
    numeric = _numeric_options(app)
    assert ("separate", "--detect-fps") in numeric and ("data synth", "--duration") in numeric
    cases = {(c, o) for c, o, _, _ in CASES}
    assert numeric - CHECKED_BY_THE_LIBRARY <= cases, "a numeric option with no range check test"
    assert cases - numeric == {("eval", "--window")}  # a number given as text ('65535' or '10s')


# --- usage errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, command, phrase",
    [
        (["separate"], "separate", "missing argument 'VIDEO'"),
        (["weights", "info"], "weights info", "missing argument 'NAME'"),
        (["data", "synth"], "data synth", "missing option '--output'"),
        (["separate", "a.mp4", "--bogus"], "separate", "no such option: --bogus"),
        (["separate", "a.mp4", "b.mp4"], "separate", "unexpected extra argument"),
        (["separate", "a.mp4", "--batch-windows", "abc"], "separate", "'--batch-windows'"),
        (["separate", "a.mp4", "--detect-imgsz", "3.5"], "separate", "'--detect-imgsz'"),
        (["separate", "a.mp4", "--conf", "high"], "separate", "'--conf'"),
        (["train", "--epochs", "ten"], "train", "'--epochs'"),
        (["eval", "-m", "mixture", "--data", "x", "--protocol", "mir_eval"], "eval", "'--protocol'"),
        (["eval", "-m", "mixture", "--data", "x", "--precision", "fp16"], "eval", "'--precision'"),
        (["separate", "a.mp4", "--precision", "half"], "separate", "'--precision'"),
        (["train", "--mix"], "train", "'--mix' requires an argument"),
        (["-v", "data", "synth", "-o"], "data synth", "'-o' requires an argument"),
        (["no-such-command"], "", "no such command 'no-such-command'"),
        (["data", "nope"], "data", "no such command 'nope'"),
        (["--no-such-flag"], "", "no such option: --no-such-flag"),
    ],
)
def test_usage_error_is_one_line(capsys, args, command, phrase):
    rc, out, err = run(capsys, *args)
    assert_one_error(rc, err, phrase)
    where = f"avsep: error: {command}: " if command else "avsep: error: "
    assert err.startswith(where) and err.rstrip().endswith(f"(see avsep {command + ' ' if command else ''}--help)")
    assert out == "" and "╭" not in err and "Usage:" not in err


def test_usage_error_from_the_console_script_is_one_line(tmp_path):
    script = Path(sys.executable).parent / "avsep"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "avsep_cli"]
    proc = subprocess.run([*cmd, "separate", "--detect-fps", "nan", str(tmp_path / "v.mp4")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["avsep: error: separate: --detect-fps nan: expected a number in [1, 240] "
                                        "(see avsep separate --help)"]


def test_interrupt_inside_a_command_is_one_line_130(capsys, monkeypatch):
    """Ctrl-C reaches main() as KeyboardInterrupt (click's standalone mode would turn it into a silent 130)."""
    from avsep_cli.cli import common

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "resolve_device", interrupted)
    rc, _, err = run(capsys, "train", "--method", "avpc")
    assert rc == 130 and err.splitlines() == ["avsep: interrupted"]


def test_a_broken_pipe_that_is_not_stdout_is_an_internal_error(capsys, monkeypatch):
    """Only a closed stdout (`avsep ... | head`) ends quietly; a broken pipe to FFmpeg is reported."""
    from avsep_cli.cli import common

    def broken(name):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(common, "resolve_device", broken)
    rc, _, err = run(capsys, "train", "--method", "avpc")
    assert rc == 1 and err.startswith("avsep: internal error: BrokenPipeError") and len(err.splitlines()) == 1


# --- help and version still print normally ----------------------------------------------------------


@pytest.mark.parametrize(
    "args, shows",
    [
        (["--help"], "separate"),
        (["-h"], "train"),
        (["separate", "--help"], "--detect-fps"),
        (["data", "synth", "-h"], "--duration"),
        (["weights", "--help"], "verify"),
    ],
)
def test_help_prints_on_stdout_and_exits_0(capsys, args, shows):
    rc, out, err = run(capsys, *args)
    assert rc == 0 and err == ""
    assert "Usage" in out and shows in out


def test_version_prints_on_stdout_and_exits_0(capsys):
    rc, out, err = run(capsys, "-v", "--version")
    assert rc == 0 and out.strip() == f"avsep {__version__}" and err == ""


@pytest.mark.parametrize("args", [[], ["data"], ["weights"]])
def test_a_group_alone_prints_its_help(capsys, args):
    """As before: the help on stdout and exit code 2 (a command is missing), no error line."""
    rc, out, err = run(capsys, *args)
    assert rc == 2 and "Usage" in out and "error" not in err


def test_help_into_a_closed_pipe_is_quiet():
    """`avsep --help | true`: the reader is gone long before avsep (seconds of imports) writes."""
    script = Path(sys.executable).parent / "avsep"
    cmd = f"'{script}'" if script.exists() else f"'{sys.executable}' -m avsep_cli"
    proc = subprocess.run(["bash", "-c", f"{cmd} separate --help | true; exit ${{PIPESTATUS[0]}}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr == ""


# --- --boxes files (avsep_cli.boxes.validate_boxes) --------------------------------------------------

GOOD_BOX = [10, 20, 110, 140]


@pytest.mark.parametrize(
    "data",
    [
        {"fps": 4, "players": [{"class": "violin", "boxes": [GOOD_BOX, None, [0.5, 0.5, 1.5, 2.5]]}]},
        {"players": [{"class": "violin", "boxes": []}, {"class": "cello", "boxes": [None]}]},  # fps: default 8
        {"fps": 8.0, "players": []},
        {"id": "x", "fps": 8, "players": [{"class": "flute", "performance": {}, "picture": {}, "boxes": [GOOD_BOX]}]},
        {"fps": 4, "players": [{"class": "violin", "boxes": [[-5, -5, 3, 3]]}]},  # partly outside the frame
    ],
)
def test_valid_boxes_pass(data):
    validate_boxes(data, Path("boxes.json"))


def _players(*boxes, cls="violin"):
    return {"fps": 4, "players": [{"class": "cello", "boxes": [GOOD_BOX]}, {"class": cls, "boxes": list(boxes)}]}


@pytest.mark.parametrize(
    "data, phrase",
    [
        (_players([1, 2]), "players[1] (violin) frame 0: box [1,2]"),
        (_players(GOOD_BOX, None, [1, 2, 3]), "players[1] (violin) frame 2: box [1,2,3]"),
        (_players(GOOD_BOX, [1, 2, 3, 4, 5]), "frame 1"),
        (_players([5, 2, 5, 4]), "frame 0: box [5,2,5,4]"),  # x2 == x1
        (_players([1, 9, 3, 4]), "frame 0"),  # y2 < y1
        (_players([1, 2, float("nan"), 4]), "frame 0: box [1,2,NaN,4]"),
        (_players([1, 2, float("inf"), 4]), "frame 0"),
        (_players([1, 2, 10**400, 4]), "frame 0"),
        (_players(["1", 2, 3, 4]), "frame 0"),
        (_players([True, 2, 3, 4]), "frame 0"),
        (_players({"x1": 1}), "frame 0"),
        (_players(7), "frame 0: box 7"),
        ({"fps": 0, "players": []}, "fps 0: expected a finite number > 0"),
        ({"fps": -4, "players": []}, "fps -4"),
        ({"fps": float("nan"), "players": []}, "fps NaN"),
        ({"fps": "4", "players": []}, 'fps "4"'),
        ({"fps": None, "players": []}, "fps null"),
        ({"fps": 4}, "'players' must be a list"),
        ({"fps": 4, "players": {"class": "violin"}}, "'players' must be a list"),
        ({"fps": 4, "players": ["violin"]}, "players[0]: expected an object"),
        ({"fps": 4, "players": [{"boxes": []}]}, "players[0]: 'class' must be a non-empty string"),
        ({"fps": 4, "players": [{"class": 3, "boxes": []}]}, "'class' must be a non-empty string, not 3"),
        ({"fps": 4, "players": [{"class": "violin"}]}, "players[0] (violin): 'boxes' must be a list"),
        ({"fps": 4, "players": [{"class": "violin", "boxes": [1, 2, 3, 4]}]}, "frame 0: box 1"),
        ([GOOD_BOX], "expected a JSON object"),
    ],
)
def test_bad_boxes_are_one_line_naming_file_player_and_frame(data, phrase):
    with pytest.raises(AvsepError) as e:
        validate_boxes(data, Path("clips/duet_boxes.json"))
    msg = str(e.value)
    assert msg.startswith("clips/duet_boxes.json: ") and phrase in msg, msg
    assert "\n" not in msg and len(msg) < 300


def test_bad_boxes_message_names_the_first_bad_frame_and_stays_short():
    boxes = [GOOD_BOX] * 50 + [[1, 2]] + [[0] * 1000]
    with pytest.raises(AvsepError, match=r"players\[1\] \(violin\) frame 50: box \[1,2\]"):
        validate_boxes(_players(*boxes), "b.json")
    with pytest.raises(AvsepError) as e:
        validate_boxes(_players([0] * 1000), "b.json")
    assert "…" in str(e.value) and len(str(e.value)) < 300


def test_boxes_given_as_a_dict_are_named_boxes():
    with pytest.raises(AvsepError, match=r"^boxes: players\[0\] \(violin\) frame 0"):
        data = {"fps": 4, "players": [{"class": "violin", "boxes": [[1, 2]]}]}
        validate_boxes(data, data)


def test_boxes_from_a_json_file_round_trip(tmp_path):
    """What json.loads makes of a file: NaN and 1e400 arrive as floats and are refused as such."""
    path = tmp_path / "b.json"
    path.write_text('{"fps": 4, "players": [{"class": "violin", "boxes": [[1, 2, 3, 4], [1, 2, NaN, 1e400]]}]}')
    with pytest.raises(AvsepError, match=r"b\.json: players\[0\] \(violin\) frame 1"):
        validate_boxes(json.loads(path.read_text()), path)
