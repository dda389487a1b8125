#!/usr/bin/env bash
# The training campaign (issue 18): every run's command in one place, started or resumed by name.
#
#   scripts/campaign.sh NAME        e.g.  nohup scripts/campaign.sh ialcms >> ~/avsep-runs/r18/ialcms.log 2>&1 &
#
# RUNS (default ~/avsep-runs/r18) holds the run folders, CORPUS (default ~/avsep-runs/broad) is
# `avsep data synth -o CORPUS --size default --seed 0 --workers 2` followed by `avsep data index CORPUS`.
# CODE, when set, is a snapshot of the repository the runs import (so that editing the checkout does not
# change a run half-way); PYTHON is the interpreter with avsep's dependencies.
# DRY_RUN=1 prints the command instead of running it.
#
# Every run: the cpu preset, bf16 autocast where the CPU has bf16 units (else fp32), channels-last, the
# frozen trunk's features cached, one thread, batch 8, 100 steps per epoch, 32 validation mixtures, seed 0.
# A run whose folder has a last.pt resumes (its config.json keeps everything but the length and the CPU
# cap; the CPU time of all its resumes counts towards that cap).
set -euo pipefail
NAME=${1:?usage: campaign.sh NAME (ialcms, ialcms-sup, ialcms-noial, avpc, avpc-rcop, sop, avpc-mix3, sop-mix3)}
RUNS=${RUNS:-$HOME/avsep-runs/r18}
CORPUS=${CORPUS:-$HOME/avsep-runs/broad}
PYTHON=${PYTHON:-python}
TRUNK=${TRUNK:-visual-trunk-broad-ft}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ -n "${CODE:-}" ]; then export PYTHONPATH="$CODE"; fi
avsep() { ${DRY_RUN:+echo} "$PYTHON" -m avsep_cli "$@"; }

# bf16 autocast only pays on CPUs with AVX512-BF16 or AMX (2.2-2.7x fp32's steps per CPU-second there);
# without them (e.g. Ice Lake) it is slower than fp32 (0.56-0.75x) and fp32 with channels-last is fastest
# (python benchmarks/bench_train.py says which).
if [ -z "${PRECISION:-}" ]; then
  if grep -qE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then PRECISION=bf16; else PRECISION=fp32; fi
fi
common=(--preset cpu --root "$CORPUS" --visual-weights "$TRUNK" --cache-features --precision "$PRECISION" --channels-last
        --steps-per-epoch 100 --batch-size 8 --val-num 32 --seed 0)
# Lengths are set in epochs (100 steps) so that every LR drop and warm-up happens; the CPU cap (`cap`,
# passed on every start and resume) is only a safety net, well above the expected cost.
#
# Sized to finish inside one working session: the machine was wiped between sessions twice (sessions 9
# and 10 lost every run folder), so a run that spans sessions is lost with it. Each segment is about two
# CPU-hours (two runs at a time, one per core) and its best weights are shipped at the session's end; a
# later session continues from the shipped weights with FROM=weights/FILE.safetensors, which starts the
# next segment NAME-sN (SEG=N, default 2) from them: fresh optimiser, the LR schedule restarted, IAL-CMS
# at its full lambdas from the first batch. Per-step cost with data loading and validation, fp32 +
# channels-last, one thread: AVPC ~2.2, Sound-of-Pixels ~1.5, IAL-CMS ~4.4 CPU-s (2-core Ice Lake; the
# AMD EPYC of session 10 is measured in each run's history.csv). LR drops at 40 % and 80 % of a segment,
# as the references' 40,80 of 100 epochs. IAL-CMS's lambda warm-ups are scaled to the segment as the LR
# drops are (the authors': x10 after 8k/16k/24k batches for lambda_ial, after 4k/8k/12k separator steps,
# a third of the batches, for lambda_av; see docs/fidelity.md).
warmup() { w=(--option "lambda_ial_steps=[$1,$(($1 * 2)),$(($1 * 3))]" --option "lambda_av_steps=[$2,$(($2 * 2)),$(($2 * 3))]"); }
if [ -n "${FROM:-}" ]; then
  warmup() { w=(--option "lambda_ial_steps=[]" --option "lambda_av_steps=[]"); }
fi
rcop2=(--lr-steps 13,26)
case "$NAME" in
  # previous weights: 550 steps -> 1,600 steps a segment, ~120 CPU-min
  ialcms)       epochs=16; cap=180; warmup 300 150; args=(--method ialcms "${w[@]}") ;;
  # previous: 2,300 cheaper steps (767 separator updates) -> 2,700 steps, ~120 CPU-min
  ialcms-sup)   epochs=27; cap=180; warmup 550 275; args=(--method ialcms --supervised "${w[@]}") ;;
  # the ablation: as many separator updates as `ialcms` (every third batch, with or without the critic)
  ialcms-noial) epochs=16; cap=180; warmup 300 150; args=(--method ialcms --no-ial "${w[@]}") ;;
  # previous: 1,400 steps -> 3,200 steps a segment, ~120 CPU-min
  avpc)         epochs=32; cap=180; args=(--method avpc --lr-steps 13,26) ;;
  # previous: 200 + 1,100 steps -> RCoP 400 steps (LR drops at 2, 3 of 4 epochs, as the reference's 20,30
  # of 40), then 3,200 Mix-and-Separate steps
  avpc-rcop)    epochs=32; cap=180; args=(--method avpc --rcop --rcop-epochs 4 --rcop-lr-steps 2,3 "${rcop2[@]}") ;;
  # previous: 2,000 steps -> 4,800 steps, ~120 CPU-min
  sop)          epochs=48; cap=180; args=(--method sop --lr-steps 19,38) ;;
  # the 3-mix curriculum: from the 2-mix weights (FROM, else the 2-mix run's best), about an hour more
  avpc-mix3)    epochs=15; cap=90; args=(--method avpc --mix 3 --init-from "${FROM:-$RUNS/avpc/best.pt}" --lr-steps 8,12) ;;
  sop-mix3)     epochs=22; cap=90; args=(--method sop --mix 3 --init-from "${FROM:-$RUNS/sop/best.pt}" --lr-steps 11,18) ;;
  *) echo "campaign.sh: unknown run $NAME" >&2; exit 2 ;;
esac
if [ -n "${FROM:-}" ] && [[ "$NAME" != *-mix3 ]]; then
  [ "$NAME" = avpc-rcop ] && args=(--method avpc "${rcop2[@]}")  # RCoP was the first segment's stage 1
  args+=(--init-from "$FROM")
  NAME="$NAME-s${SEG:-2}"
fi

run="$RUNS/$NAME"
mkdir -p "$RUNS"
echo "== $(date -u +%FT%TZ) $NAME (code ${CODE:-installed}, $PRECISION)"
if [ -f "$run/last.pt" ]; then
  # --epochs and --max-cpu-minutes: a run lengthened here continues to its new length
  avsep train --resume "$run" --epochs "$epochs" --max-cpu-minutes "$cap"
elif [ "$NAME" = avpc-rcop ] && [ -f "$run/rcop/last.pt" ]; then
  # interrupted in stage 1: finish the RCoP stage, then start stage 2 from it as --rcop would
  avsep train --resume "$run/rcop" --max-cpu-minutes "$cap"
  avsep train "${common[@]}" --method avpc --init-from "$run/rcop/last.pt" "${rcop2[@]}" --epochs "$epochs" \
    --max-cpu-minutes "$cap" --run "$run"
else
  avsep train "${common[@]}" "${args[@]}" --epochs "$epochs" --max-cpu-minutes "$cap" --run "$run"
fi
