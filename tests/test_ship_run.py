"""scripts/ship_run.py: a real (tiny) training run shipped as weights, its manifest figures read from the
run folder, the weights loading back by name and equal to the checkpoint's (as float16)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from avsep_cli import checkpoint, registry
from avsep_cli.cli import main

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ship_run.py"
PLOT = SCRIPT.with_name("plot_curves.py")


def _ship(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_a_run_is_shipped_with_its_own_figures_and_loads_by_name(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--method", "tiny", "--root", str(tiny_corpus), "--run", str(run), "--epochs", "2",
                 "--steps-per-epoch", "3", "--batch-size", "2", "--segment", "8192", "--val-num", "2"]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r.get("type") == "epoch"]
    best = max(epochs, key=lambda r: r["val_sdr"])
    weights = tmp_path / "weights"
    r = _ship(run, "--name", "tiny-test", "--method", "tiny", "--command", "avsep train --method tiny ...",
              "--default", "--note", "a test", "--weights-dir", weights)
    assert r.returncode == 0, r.stderr
    assert "tiny-test:" in r.stdout and "6 steps, 12 mixtures" in r.stdout

    e = registry.entry("tiny-test", weights)
    t = e["training"]
    assert e["default"] and e["method"] == "tiny" and e["dtype"] == "float16"
    assert t["steps"] == 6 and t["samples_seen"] == 12 and t["batch_size"] == 2
    assert t["cpu_minutes"] == round(epochs[-1]["cpu_min"], 1) and t["best_val_sdr"] == best["val_sdr"]
    assert t["checkpoint"] == "best.pt" and t["checkpoint_epoch"] == best["epoch"] + 1
    assert t["command"] == "avsep train --method tiny ..." and t["note"] == "a test"
    recipe = json.loads((tiny_corpus / "corpus.json").read_text())
    assert e["corpus"]["seed"] == recipe["seed"] and e["corpus"]["size"] == "tiny" and e["corpus"]["clips"] == 20

    loaded = registry.resolve("tiny-test", folder=weights)  # sha256-checked against the manifest
    ck = checkpoint.load(run / "best.pt")
    for k, v in ck["state_dict"].items():
        if v.is_floating_point():
            assert torch.equal(loaded.data["state_dict"][k].float(), v.half().float()), k


def test_a_run_continued_from_shipped_weights_records_its_lineage(tiny_corpus, tmp_path, capsys):
    """The campaign's next segment starts from the weights the last one shipped (--init-from): the shipped
    entry names its parent and adds the parent's steps and CPU-minutes to its own."""
    common = ["train", "--method", "tiny", "--root", str(tiny_corpus), "--epochs", "1", "--steps-per-epoch", "2",
              "--batch-size", "2", "--segment", "8192", "--val-num", "2"]
    weights = tmp_path / "weights"
    assert main([*common, "--run", str(tmp_path / "a")]) == 0
    assert _ship(tmp_path / "a", "--name", "tiny-a", "--method", "tiny", "--command", "a",
                 "--weights-dir", weights).returncode == 0
    assert main([*common, "--run", str(tmp_path / "b"), "--init-from", str(weights / "tiny-a.safetensors")]) == 0
    out = capsys.readouterr()
    assert "checksum" not in out.out + out.err  # shipped files have no content checksum: nothing to warn about
    r = _ship(tmp_path / "b", "--name", "tiny-b", "--method", "tiny", "--command", "b", "--weights-dir", weights)
    assert r.returncode == 0, r.stderr
    a, b = registry.entry("tiny-a", weights), registry.entry("tiny-b", weights)
    parent = b["training"]["init_from"]
    assert parent["name"] == "tiny-a" and parent["sha256"] == a["sha256"]
    assert "path" not in parent  # a shipped parent is named, not located on the machine that trained it
    assert b["training"]["steps_total"] == 4 == a["training"]["steps"] + b["training"]["steps"]
    assert b["training"]["samples_seen_total"] == 8
    total = a["training"]["cpu_minutes"] + b["training"]["cpu_minutes"]
    assert abs(b["training"]["cpu_minutes_total"] - total) <= 0.1
    assert "with its parents 4 steps" in r.stdout
    assert "init_from" not in a["training"]

    # each segment keeps its learning curve, so the lineage's curve outlives the run folders
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    val = [x for x in rows if x.get("type") == "epoch"]
    assert b["training"]["curve"] == [[round(x["cpu_min"], 2), x["step"] * 2, x["val_sdr"]] for x in val]
    for d in ("a", "b"):
        shutil.rmtree(tmp_path / d)
    png = tmp_path / "lineage.png"
    p = subprocess.run([sys.executable, str(PLOT), "tiny=weights:tiny-b", "-o", str(png), "--table"],
                       capture_output=True, text=True, env={**os.environ, "AVSEP_WEIGHTS": str(weights)})
    assert p.returncode == 0, p.stderr
    best = max(a["training"]["best_val_sdr"], b["training"]["best_val_sdr"])
    assert f"| tiny | {best:.2f} | {b['training']['cpu_minutes_total']} | 4 | 8 |" in p.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_folder_that_is_not_a_run_is_one_line_and_writes_nothing(tmp_path):
    r = _ship(tmp_path, "--name", "x", "--method", "avpc", "--command", "c", "--weights-dir", tmp_path / "w")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("ship_run: ")
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def test_a_stage_2_started_from_its_own_rcop_stage_counts_that_stage_once(tmp_path, monkeypatch):
    """campaign.sh resumes an RCoP run interrupted in stage 1 by starting stage 2 with --init-from RUN/rcop/
    last.pt: the stage is in the run's figures already (read_run adds its CPU-minutes), so it must not be
    added again as a parent; its steps and mixtures join the totals."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from ship_run import training_info

    run = tmp_path / "run"
    (run / "rcop").mkdir(parents=True)
    rows = lambda cpu, step, val: json.dumps({"type": "epoch", "epoch": 0, "step": step, "cpu_min": cpu,  # noqa: E731
                                              "wall_min": cpu, **({"val_sdr": val} if val is not None else {})})
    (run / "rcop" / "metrics.jsonl").write_text(rows(18.7, 800, None) + "\n")
    (run / "rcop" / "config.json").write_text(json.dumps({"batch_size": 8}))
    (run / "rcop" / "last.pt").write_bytes(b"x")
    (run / "metrics.jsonl").write_text(rows(30.0, 2000, 2.5) + "\n" + rows(62.4, 4500, 3.4) + "\n")
    (run / "config.json").write_text(json.dumps({"batch_size": 8, "init_from": str(run / "rcop" / "last.pt")}))
    t = training_info(run, "last.pt", "campaign.sh avpc-rcop", None)["training"]
    assert t["cpu_minutes"] == t["cpu_minutes_total"] == 81.1 and t["rcop_stage"] == {"cpu_minutes": 18.7, "steps": 800}
    assert t["steps"] == 4500 and t["steps_total"] == 5300 and t["samples_seen_total"] == 5300 * 8
    assert "init_from" not in t


def test_the_mean_of_two_runs_kept_epochs_is_shipped_with_both_runs_figures(tiny_corpus, tmp_path, capsys):
    """Stochastic weight averaging across two runs of one recipe (other --data-seed): the shipped weights are
    the mean of the kept epochs from --average-from on, the figures the two runs' sums."""
    common = ["train", "--method", "tiny", "--root", str(tiny_corpus), "--epochs", "3", "--steps-per-epoch", "2",
              "--batch-size", "2", "--segment", "8192", "--val-num", "2", "--keep-every", "1"]
    for name, seed in (("a", "1"), ("b", "2")):
        assert main([*common, "--run", str(tmp_path / name), "--data-seed", seed]) == 0
    capsys.readouterr()
    weights = tmp_path / "weights"
    r = _ship(tmp_path / "a", "--also", tmp_path / "b", "--average-from", "2", "--name", "tiny-avg", "--method",
              "tiny", "--command", "two runs", "--weights-dir", weights)
    assert r.returncode == 0, r.stderr
    assert "12 steps, 24 mixtures" in r.stdout
    t = registry.entry("tiny-avg", weights)["training"]
    assert t["checkpoint"] == "average" and "checkpoint_epoch" not in t
    assert t["averaged"] == {"from_epoch": 2, "checkpoints": 4, "runs": [{"data_seed": 1, "epochs": [2, 3]},
                                                                         {"data_seed": 2, "epochs": [2, 3]}]}
    ends = [[json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()][-1] for d in "ab"]
    assert abs(t["cpu_minutes"] - sum(e["cpu_min"] for e in ends)) <= 0.1
    kept = [checkpoint.load(tmp_path / d / "epochs" / f"e00{n}.pt")["state_dict"] for d in "ab" for n in (2, 3)]
    loaded = registry.resolve("tiny-avg", folder=weights).data["state_dict"]
    for k, v in kept[0].items():
        if v.is_floating_point():
            mean = torch.stack([s[k] for s in kept]).mean(0)
            assert torch.allclose(loaded[k].float(), mean.half().float(), atol=1e-3), k
    assert not torch.equal(kept[0][next(iter(kept[0]))], kept[2][next(iter(kept[0]))])  # the runs differ

    # another recipe does not join, nor --also without --average-from: one line, nothing written
    assert main([*common[:-2], "--run", str(tmp_path / "c"), "--batch-size", "1", "--keep-every", "1"]) == 0
    for extra in (["--average-from", "1"], []):
        r = _ship(tmp_path / "a", "--also", tmp_path / "c", *extra, "--name", "tiny-bad", "--method", "tiny",
                  "--command", "c", "--weights-dir", weights)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("ship_run: "), r.stderr
    assert not (weights / "tiny-bad.safetensors").exists()
