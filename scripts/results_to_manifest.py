"""Copy the test-split figures of `avsep eval --method all --json` runs into weights/manifest.json, so each
shipped separator's entry carries the numbers the README's results table shows.

    avsep eval --method all --mix 2 --data corpus --num 100 --json results/mix2.json --markdown results/mix2.md
    avsep eval --method all --mix 3 --data corpus --num 100 --json results/mix3.json --markdown results/mix3.md
    python scripts/results_to_manifest.py results/mix2.json results/mix3.json
"""

from __future__ import annotations

import argparse
import json

from avsep_cli import registry


def figures(summary: dict) -> dict:
    s = summary["sdr"]
    return {"n": s["n"], "sdr": round(s["mean"], 2), "sdr_ci": [round(s["ci_low"], 2), round(s["ci_high"], 2)],
            "sir": round(summary["sir"]["mean"], 2), "sar": round(summary["sar"]["mean"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="JSON files written by avsep eval --json")
    args = ap.parse_args()
    by_method: dict[str, dict] = {}
    for path in args.reports:
        rep = json.load(open(path))
        setup = rep["setup"]
        for method, r in rep["methods"].items():
            m = by_method.setdefault(method, {})
            m[f"mix{setup['mix']}"] = figures(r["summary"]["mix"])
            if r["summary"]["duet"]["sdr"]["n"]:
                m["duets"] = figures(r["summary"]["duet"])
            m["protocol"] = (f"avsep eval --method all --data corpus --split {setup['split']} --num {setup['num']} "
                             f"--seed {setup['seed']} --window {setup['window']}")
    for e in registry.entries():
        if e.get("default") and e["method"] in by_method:
            kept = {k: v for k, v in e.get("metrics", {}).items() if k not in ("command", "mix2", "mix3", "duets")}
            registry.write_entry({**e, "metrics": {**kept, **by_method[e["method"]]}})
            print(f"{e['name']}: {by_method[e['method']]}")


if __name__ == "__main__":
    main()
