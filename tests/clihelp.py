"""Calling the CLI from tests: run it in-process and check the one-line error contract."""

from __future__ import annotations

from avsep_cli.cli import main


def run(capsys, *args) -> tuple[int, str, str]:
    """Run `avsep ARGS...` through its entry point; return (exit code, stdout, stderr)."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error(rc: int, err: str, phrase: str) -> None:
    """Exit code 2 and exactly one stderr line, `avsep: error: ...`, containing `phrase`."""
    assert rc == 2, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("avsep: error:") and phrase in lines[0], lines[0]
