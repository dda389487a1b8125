#!/usr/bin/env bash
# The training campaign (issue 18): every run's command in one place, started or resumed by name.
#
#   scripts/campaign.sh NAME        e.g.  nohup scripts/campaign.sh ialcms >> ~/avsep-runs/r18/ialcms.log 2>&1 &
#
# RUNS (default ~/avsep-runs/r18) holds the run folders, CORPUS (default ~/avsep-runs/broad) is
# `avsep data synth -o CORPUS --size default --seed 0 --workers 2` followed by `avsep data index CORPUS`.
# CODE, when set, is a snapshot of the repository the runs import (so that editing the checkout does not
# change a run half-way); PYTHON is the interpreter with avsep's dependencies.
#
# Every run: the cpu preset, bf16 autocast where the CPU has bf16 units (else fp32), channels-last, the frozen trunk's features cached, one thread,
# batch 8, 100 steps per epoch, 32 validation mixtures, seed 0. A run whose folder has a last.pt resumes
# (its config.json keeps everything, --max-cpu-minutes included: all resumes count towards it).
set -euo pipefail
NAME=${1:?usage: campaign.sh NAME (ialcms, ialcms-sup, ialcms-noial, avpc, avpc-rcop, sop, avpc-mix3, sop-mix3)}
RUNS=${RUNS:-$HOME/avsep-runs/r18}
CORPUS=${CORPUS:-$HOME/avsep-runs/broad}
PYTHON=${PYTHON:-python}
TRUNK=${TRUNK:-visual-trunk-broad-ft}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ -n "${CODE:-}" ]; then export PYTHONPATH="$CODE"; fi
avsep() { "$PYTHON" -m avsep_cli "$@"; }

# bf16 autocast only pays on CPUs with AVX512-BF16 or AMX (2.2-2.7x fp32's steps per CPU-second there);
# without them (e.g. Ice Lake) it is slower than fp32 (0.56-0.75x) and fp32 with channels-last is fastest
# (python benchmarks/bench_train.py says which).
if [ -z "${PRECISION:-}" ]; then
  if grep -qE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then PRECISION=bf16; else PRECISION=fp32; fi
fi
common=(--preset cpu --root "$CORPUS" --visual-weights "$TRUNK" --cache-features --precision "$PRECISION" --channels-last
        --steps-per-epoch 100 --batch-size 8 --val-num 32 --seed 0)
# Lengths are set in epochs (100 steps) so that every LR drop and warm-up happens; --max-cpu-minutes is a
# safety net. They were sized for the 2-core Ice Lake machine (fp32 + channels-last, one thread): AVPC
# ~2.5, Sound-of-Pixels ~1.6, IAL-CMS ~5 CPU-s per step with data loading and validation, so each run
# comes to about 3.3 CPU-hours. LR drops at 40 % and 80 % of the run, as the references' 40,80 of 100.
# IAL-CMS's lambda warm-ups scaled to the 2,500-batch run as the LR drops are (the authors': x10 after
# 8k/16k/24k batches for lambda_ial, 4k/8k/12k separator steps for lambda_av; see docs/fidelity.md).
warmup=(--option 'lambda_ial_steps=[600,1200,1800]' --option 'lambda_av_steps=[300,600,900]')
avpc=(--method avpc --epochs 50 --lr-steps 20,40 --max-cpu-minutes 240)
rcop2=(--epochs 42 --lr-steps 17,34 --max-cpu-minutes 210)
case "$NAME" in
  ialcms)       args=(--method ialcms --epochs 25 --max-cpu-minutes 260 "${warmup[@]}") ;;
  ialcms-sup)   args=(--method ialcms --supervised --epochs 25 --max-cpu-minutes 260 "${warmup[@]}") ;;
  # the ablation: as many separator updates as `ialcms` made (a third of its batches), without the critic
  ialcms-noial) args=(--method ialcms --no-ial --epochs "${NOIAL_EPOCHS:?separator updates of the ialcms run, divided by 100}"
                      "${warmup[@]}") ;;
  avpc)         args=("${avpc[@]}") ;;
  # RCoP stage 8 epochs (LR drops at 4, 6 as the reference's 20,30 of 40), then Mix-and-Separate
  avpc-rcop)    args=(--method avpc --rcop --rcop-epochs 8 --rcop-lr-steps 4,6 "${rcop2[@]}") ;;
  sop)          args=(--method sop --epochs 75 --lr-steps 30,60 --max-cpu-minutes 240) ;;
  # the 3-mix curriculum: from the 2-mix run's best weights, about an hour more
  avpc-mix3)    args=(--method avpc --mix 3 --init-from "$RUNS/avpc/best.pt" --epochs 15 --lr-steps 8,12
                      --max-cpu-minutes 70) ;;
  sop-mix3)     args=(--method sop --mix 3 --init-from "$RUNS/sop/best.pt" --epochs 22 --lr-steps 11,18
                      --max-cpu-minutes 70) ;;
  *) echo "campaign.sh: unknown run $NAME" >&2; exit 2 ;;
esac

run="$RUNS/$NAME"
mkdir -p "$RUNS"
echo "== $(date -u +%FT%TZ) $NAME (code ${CODE:-installed}, $PRECISION)"
if [ -f "$run/last.pt" ]; then
  avsep train --resume "$run"
elif [ "$NAME" = avpc-rcop ] && [ -f "$run/rcop/last.pt" ]; then
  # interrupted in stage 1: finish the RCoP stage, then start stage 2 from it as --rcop would
  avsep train --resume "$run/rcop"
  avsep train "${common[@]}" --method avpc --init-from "$run/rcop/last.pt" "${rcop2[@]}" --run "$run"
else
  avsep train "${common[@]}" "${args[@]}" --run "$run"
fi
