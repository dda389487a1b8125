"""scripts/plot_curves.py: every run's validation SDR against CPU-minutes and mixtures seen, in one PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plot_curves.py"


def _run(folder: Path, epochs: list[dict], batch: int = 8) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"batch_size": batch}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"type": "epoch", **e}) + "\n" for e in epochs))
    return folder


def test_one_png_with_every_run_and_the_rcop_stage_counted(tmp_path):
    a = _run(tmp_path / "avpc", [{"epoch": 0, "step": 50, "cpu_min": 3.0, "val_sdr": -1.0},
                                 {"epoch": 1, "step": 100, "cpu_min": 6.0, "val_sdr": 0.5},
                                 {"epoch": 1, "step": 100, "cpu_min": 6.5, "val_sdr": 0.7}])  # resumed: last wins
    b = _run(tmp_path / "rcop", [{"epoch": 0, "step": 40, "cpu_min": 2.0, "val_sdr": 1.5}], batch=4)
    _run(b / "rcop", [{"epoch": 0, "step": 30, "cpu_min": 10.0}])  # RCoP stage 1: no validation
    out = tmp_path / "curves.png"
    r = subprocess.run([sys.executable, str(SCRIPT), f"AVPC={a}", str(b), "-o", str(out), "--table"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert "| AVPC | 0.70 | 6.5 | 100 | 800 |" in r.stdout
    assert "| rcop | 1.50 | 12.0 | 30 + 40 | 160 |" in r.stdout
    assert not list(tmp_path.glob("*.part"))


def test_a_folder_that_is_not_a_run_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "-o", str(tmp_path / "c.png")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a run folder" in r.stderr
    assert not (tmp_path / "c.png").exists()
