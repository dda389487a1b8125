"""`avsep eval`: reference methods on the tiny corpus, deterministic reports, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from avsep_cli.cli import main


def run_eval(capsys, *args):
    code = main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_oracle_far_above_mixture_and_reports_are_deterministic(tiny_corpus, tmp_path, capsys):
    j1, j2, c1, md = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "a.csv", tmp_path / "table.md"
    args = ["--method", "mixture,oracle-ibm,oracle-ibm-log", "--mix", "2", "--data", str(tiny_corpus), "--num", "6"]
    code, out, _ = run_eval(capsys, *args, "--json", str(j1), "--csv", str(c1), "--plots", str(tmp_path / "png"),
                            "--plots-num", "2", "--markdown", str(md))
    assert code == 0 and "oracle-ibm" in out and "SDR" in out
    assert run_eval(capsys, *args, "--json", str(j2))[0] == 0
    assert j1.read_bytes() == j2.read_bytes()  # same seed, same mixtures, same numbers
    data = json.loads(j1.read_text())
    methods = data["methods"]
    n_duet_sources = sum(2 for k in data["setup"]["items"] if k.startswith("duet-"))
    for name in ("mixture", "oracle-ibm", "oracle-ibm-log"):
        sources = methods[name]["sources"]
        assert len(sources) == 6 * 2 + n_duet_sources  # one entry per source
        assert all(s["valid"] for s in sources)
    mix_sdr = methods["mixture"]["summary"]["mix"]["sdr"]["mean"]
    ibm_sdr = methods["oracle-ibm"]["summary"]["mix"]["sdr"]["mean"]
    log_sdr = methods["oracle-ibm-log"]["summary"]["mix"]["sdr"]["mean"]
    assert ibm_sdr > mix_sdr + 10.0
    assert ibm_sdr - 2.0 < log_sdr <= ibm_sdr + 0.5  # the log grid costs a little, never gains much
    assert methods["oracle-ibm"]["summary"]["duet"]["sdr"]["mean"] > methods["mixture"]["summary"]["duet"]["sdr"]["mean"] + 10
    assert len(c1.read_text().splitlines()) == 1 + 3 * len(methods["mixture"]["sources"])
    assert len(list((tmp_path / "png").glob("*.png"))) == 3 * 2
    # the Markdown table: one row per method with the JSON's means (reference methods have no parameters)
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in md.read_text().splitlines()[3:]}
    assert sorted(rows) == sorted(methods)
    for name, cells in rows.items():
        summ = methods[name]["summary"]
        assert cells[0] == "-" and cells[1].startswith(f"{summ['mix']['sdr']['mean']:.2f} [")
        assert cells[4] == f"{summ['duet']['sdr']['mean']:.2f}" and float(cells[7]) >= 0


def test_three_source_mixtures(tiny_corpus, tmp_path, capsys):
    j = tmp_path / "m3.json"
    code, _, _ = run_eval(capsys, "--method", "oracle-irm", "--mix", "3", "--data", str(tiny_corpus), "--num", "3",
                          "--no-duets", "--window", "10s", "--json", str(j))
    assert code == 0
    items = json.loads(j.read_text())["methods"]["oracle-irm"]["sources"]
    assert len(items) == 9 and len({s["cls"] for s in items if s["item"] == "mix3-0000"}) == 3


def test_unreadable_clips_are_skipped_and_counted(tiny_corpus, tmp_path, capsys):
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    victim = sorted((root / "solo").glob("*/*.mp4"))[0]
    victim.write_bytes(victim.read_bytes()[:2000])  # truncated
    j = tmp_path / "r.json"
    code, _, err = run_eval(capsys, "--method", "mixture", "--data", str(root), "--split", "train", "--num", "30",
                            "--no-duets", "--json", str(j))
    assert code == 0
    skipped = json.loads(j.read_text())["methods"]["mixture"]["skipped_clips"]
    assert skipped > 0
    assert "skipping" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "nope"], "unknown method"),
        (["--method", "mixture", "--mix", "9"], "needs solo clips of at least 9 different classes"),
        (["--method", "mixture", "--window", "abc"], "--window abc"),
        (["--method", "tiny"], "needs --weights"),
    ],
)
def test_bad_input(tiny_corpus, capsys, args, message):
    code, _, err = run_eval(capsys, *args, "--data", str(tiny_corpus))
    assert code == 2 and message in err and err.count("\n") == 1


def test_not_a_corpus(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("hi")
    code, _, err = run_eval(capsys, "--method", "mixture", "--data", str(tmp_path))
    assert code == 2 and "not a corpus" in err


def test_existing_outputs_are_refused(tiny_corpus, tmp_path, capsys):
    j = tmp_path / "exists.json"
    j.write_text("{}")
    code, _, err = run_eval(capsys, "--method", "mixture", "--data", str(tiny_corpus), "--json", str(j))
    assert code == 2 and "--force" in err and j.read_text() == "{}"


def _outputs(tmp_path):
    return tmp_path / "r.json", tmp_path / "r.md"


def test_nonfinite_estimate_is_invalid_counted_and_reports_are_written(tiny_corpus, tmp_path, capsys, monkeypatch):
    """A method whose estimate holds one +inf sample (and another one NaN) must not crash the summary: those
    two sources are invalid and counted, one warning line says so, table, JSON and Markdown are written."""
    from avsep_cli.methods import reference

    real = reference.MixtureMethod.separate

    def broken(self, batch):
        est = real(self, batch)
        est[0, 0, 100] = float("inf")  # first item of the batch: one sample of each estimate
        est[0, 1, 7] = float("nan")
        return est

    monkeypatch.setattr(reference.MixtureMethod, "separate", broken)
    j, md = _outputs(tmp_path)
    code, out, err = run_eval(capsys, "--method", "mixture", "--data", str(tiny_corpus), "--num", "4", "--no-duets",
                              "--batch-size", "4", "--json", str(j), "--markdown", str(md))
    assert code == 0, err
    assert "SDR" in out and "Traceback" not in err
    warn = [line for line in err.splitlines() if "NaN/inf" in line]
    assert len(warn) == 1 and "mixture: 2 estimate(s) with NaN/inf samples scored as invalid" in warn[0]
    rep = json.loads(j.read_text())["methods"]["mixture"]
    bad = [(s["item"], s["source"]) for s in rep["sources"] if not s["valid"]]
    assert bad == [("mix2-0000", 0), ("mix2-0000", 1)]
    assert rep["nonfinite_estimates"] == 2 and rep["skipped_sources"] == 2 and rep["skipped_clips"] == 0
    assert all(s["sdr"] is None and s["sdr_mixture"] is None for s in rep["sources"] if not s["valid"])
    summ = rep["summary"]["mix"]
    for m in ("sdr", "sir", "sar", "si_sdr", "sdri"):
        assert summ[m]["n"] == 6 and isinstance(summ[m]["mean"], float), m
    row = md.read_text().splitlines()[3]
    assert row.startswith("| mixture |") and f"{summ['sdr']['mean']:.2f} [" in row


def test_nan_reference_item_is_skipped_with_a_warning(tiny_corpus, tmp_path, capsys, monkeypatch):
    """A NaN in a reference is a data problem: that item is skipped and counted like an unreadable clip,
    with one warning line naming it; the other items are scored and every report is written."""
    from avsep_cli import evaluate

    real = evaluate.load_item

    def load(item, window):
        mix, refs, starts = real(item, window)
        if item.key == "mix2-0001":
            refs = refs.copy()
            refs[1, 50] = np.nan
        return mix, refs, starts

    monkeypatch.setattr(evaluate, "load_item", load)
    j, md = _outputs(tmp_path)
    code, _, err = run_eval(capsys, "--method", "oracle-irm", "--data", str(tiny_corpus), "--num", "3", "--no-duets",
                              "--json", str(j), "--markdown", str(md))
    assert code == 0, err
    warn = [line for line in err.splitlines() if "mix2-0001" in line]
    assert len(warn) == 1 and "skipping" in warn[0] and "NaN/inf" in warn[0]
    rep = json.loads(j.read_text())["methods"]["oracle-irm"]
    assert rep["skipped_clips"] == 1 and rep["skipped_sources"] == 0 and rep["nonfinite_estimates"] == 0
    assert sorted({s["item"] for s in rep["sources"]}) == ["mix2-0000", "mix2-0002"]
    assert all(s["valid"] for s in rep["sources"]) and rep["summary"]["mix"]["sdr"]["n"] == 4
    assert md.read_text().splitlines()[3].startswith("| oracle-irm |")
