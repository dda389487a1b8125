"""The CLI shell: help, version, entry points, the exit-code contract (0 ok, 2 bad input, 1 internal)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from avsep_cli import __version__
from avsep_cli.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_subcommand(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in ("separate", "train", "eval", "data", "weights", "info"):
        assert name in out


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"avsep {__version__}"


@pytest.mark.parametrize("argv", [["-m", "avsep_cli"], None])
def test_entry_points_run_as_processes(argv):
    if argv is None:  # the console script installed beside this interpreter
        script = Path(sys.executable).parent / "avsep"
        assert script.exists(), "the avsep console script is not installed"
        cmd = [str(script), "--version"]
    else:
        cmd = [sys.executable, *argv, "--version"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"avsep {__version__}"


def test_unknown_training_method_lists_the_built_ones(capsys):
    code, _, err = run(capsys, "train", "--method", "nope")
    assert code == 2 and "unknown --method nope" in err and "detector" in err and "ialcms" in err
    code, _, err = run(capsys, "train", "--method", "detector")  # built: it asks for its corpus
    assert code == 2 and "--root is required" in err


def test_usage_errors_exit_2(capsys):
    assert run(capsys, "no-such-command")[0] == 2
    assert run(capsys, "train")[0] == 2  # missing --method


def test_bad_device_is_one_line(capsys):
    code, _, err = run(capsys, "train", "--method", "avpc", "--device", "cuda:99")
    assert code == 2 and err.count("\n") == 1 and "--device cuda:99" in err
    code, _, err = run(capsys, "train", "--method", "avpc", "--device", "tpu")
    assert code == 2 and "expected auto, cpu, cuda or cuda:N" in err


def test_internal_error_exits_1_without_traceback(capsys, monkeypatch):
    from avsep_cli.cli import common

    def boom(name):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(common, "resolve_device", boom)
    code, _, err = run(capsys, "train", "--method", "avpc")
    assert code == 1
    assert "internal error" in err and "simulated bug" in err and "Traceback" not in err


def test_verbosity_flags_are_accepted(capsys):
    assert run(capsys, "-v", "--version")[0] == 0
    assert run(capsys, "-q", "--version")[0] == 0
