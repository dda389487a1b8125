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
NAME=${1:?usage: campaign.sh NAME (ialcms, ialcms-sup, ialcms-sup-wide, ialcms-noial, avpc, avpc-proto, avpc-rcop, sop, avpc-mix3, sop-mix3)}
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
# passed on every start and resume) is only a safety net, well above the expected cost. `plan` is a run's
# schedule (its LR drops, IAL-CMS's lambda warm-ups): it is passed on every resume too, so a run re-sized
# here (say, for a slower machine) continues on its new plan (`avsep train --resume --lr-steps --option`).
#
# Sized to finish inside one working session: the machine was wiped between sessions twice (sessions 9
# and 10 lost every run folder), so a run that spans sessions is lost with it. Each segment is about two
# CPU-hours (two runs at a time, one per core) and its best weights are shipped at the session's end; a
# later session continues from the shipped weights with FROM=weights/FILE.safetensors, which starts the
# next segment NAME-sN (SEG=N, default 2) from them: fresh optimiser, the LR schedule restarted, IAL-CMS
# at its full lambdas from the first batch. Per-epoch cost with data loading and validation, fp32 +
# channels-last, one thread, measured on session 10's 2-core AMD EPYC (AVX2): AVPC 5.3 CPU-min, IAL-CMS
# 12 (the first epoch more: it fills the feature cache). LR drops at 40 % and 80 % of a segment, as the
# references' 40,80 of 100 epochs. IAL-CMS's lambda warm-ups are scaled to the segment as the LR drops are
# (the authors': x10 after 8k/16k/24k batches for lambda_ial, after 4k/8k/12k separator steps, a third of
# the batches, for lambda_av; see docs/fidelity.md), full for the last ~40 % (lambda_ial) and ~15 %.
warmup() { plan=(--option "lambda_ial_steps=[$1,$(($1 * 2)),$(($1 * 3))]" --option "lambda_av_steps=[$2,$(($2 * 2)),$(($2 * 3))]"); }
if [ -n "${FROM:-}" ]; then
  warmup() { plan=(--option "lambda_ial_steps=[]" --option "lambda_av_steps=[]"); }
fi
lr() { plan=(--lr-steps "$1"); }
case "$NAME" in
  # previous weights: 550 steps -> 900 steps a segment, ~110 CPU-min
  ialcms)       epochs=9; cap=180; warmup 170 85; args=(--method ialcms) ;;
  # previous: 2,300 steps (767 separator updates) -> 7,000 steps, ~60 CPU-min in bf16 (0.8 CPU-min per
  # epoch on session 14's EPYC with AVX512-BF16: supervised steps cost a third of the unsupervised ones),
  # the warm-ups scaled as `ialcms`'s: lambda_ial full after 55 % of the batches, lambda_av after 83 %
  ialcms-sup)   epochs=70; cap=180; warmup 1290 645; args=(--method ialcms --supervised) ;;
  # a larger preset per CPU-hour (session 17): the cpu preset at twice the audio width (ngf 32, dim 256), from
  # scratch, its schedule scaled to about the compute of ialcms-sup's segment 1 (62 CPU-min for 70 epochs;
  # 1.5 CPU-min per epoch here): warm-ups at the same share of the batches
  ialcms-sup-wide) epochs=42; cap=75; warmup 774 387
                args=(--method ialcms --supervised --model-option ngf=32 --model-option dim=256) ;;
  # the ablation: as many separator updates as `ialcms` (every third batch, with or without the critic)
  ialcms-noial) epochs=9; cap=180; warmup 170 85; args=(--method ialcms --no-ial) ;;
  # previous: 1,100 steps -> 2,000 steps a segment, ~110 CPU-min
  avpc)         epochs=20; cap=180; lr 8,16; args=(--method avpc) ;;
  # AVPC with a share of its sources guided by their class' prototype (as `avsep separate --guide auto`
  # guides them); from the default weights (FROM)
  avpc-proto)   epochs=20; cap=180; lr 8,16; args=(--method avpc --option proto_guidance=0.5) ;;
  # previous: 200 + 1,000 steps -> RCoP 400 steps (LR drops at 2, 3 of 4 epochs, as the reference's 20,30
  # of 40), then 1,200 Mix-and-Separate steps: about the compute of `avpc` (not yet measured here)
  avpc-rcop)    epochs=12; cap=180; lr 5,10; args=(--method avpc --rcop --rcop-epochs 4 --rcop-lr-steps 2,3)
                # on the campaign trunk with bf16 (session 16): RCoP 8 epochs (drops at 4 and 6, as the
                # reference's 20,30 of 40), then 45 epochs of Mix-and-Separate with 1e-4 for 70 % (AVPC's later
                # segments' schedule), about 100 CPU-minutes
                if [ "$PRECISION" = bf16 ]; then epochs=45; lr 32,40
                  args=(--method avpc --rcop --rcop-epochs 8 --rcop-lr-steps 4,6); fi ;;
  # previous: 1,700 steps -> 3,000 steps, ~110 CPU-min. 1e-4 for 70 % of the segment, as AVPC's later
  # segments: AVPC's segment 1 peaked before its drop at 40 %, and its segment 2 gained 1.7 dB at 1e-4
  # (bf16 sizes; in fp32, session 12's AVX2 EPYC: 5-7 CPU-min per epoch, so 16 epochs)
  sop)          epochs=30; cap=180; lr 21,27; args=(--method sop)
                if [ "$PRECISION" = fp32 ]; then epochs=16; lr 11,14; fi ;;
  # the 3-mix curriculum: from the 2-mix weights (FROM, else the 2-mix run's best), about an hour more
  avpc-mix3)    epochs=11; cap=90; lr 5,9; args=(--method avpc --mix 3 --init-from "${FROM:-$RUNS/avpc/best.pt}") ;;
  sop-mix3)     epochs=16; cap=90; lr 7,13; args=(--method sop --mix 3 --init-from "${FROM:-$RUNS/sop/best.pt}") ;;
  *) echo "campaign.sh: unknown run $NAME" >&2; exit 2 ;;
esac
if [ -n "${FROM:-}" ] && [[ "$NAME" != *-mix3 ]]; then
  # Later segments, sized on session 11's AMD EPYC with AVX512-BF16 (bf16 + channels-last, with loading and
  # validation: AVPC 2.2 CPU-min per epoch, IAL-CMS 4.6), 65-90 minutes each. AVPC's segment 1 peaked at
  # epoch 6, before its first drop, then stayed flat at 1e-5: its later segments keep 1e-4 for 70 % of
  # the segment.
  # Without bf16 units (fp32 + channels-last, session 10's and 12's AVX2 EPYC: AVPC 5.3 CPU-min per epoch,
  # IAL-CMS 12.2) the same ~110 CPU-min buy fewer epochs.
  # Segment 3 of AVPC (session 14's EPYC with AVX512-BF16, 1.5 CPU-min per epoch): about 75 CPU-min,
  # 1e-4 for 70 % again.
  # Segment 4 of AVPC and segment 2 of IAL-CMS supervised (session 15, the same EPYC: IAL-CMS supervised
  # 0.8 CPU-min per epoch, its segment 1 still rising at its end, at full lambdas from the first batch),
  # started as 55 and 100 epochs, two runs on the two cores, re-planned after 24 and 41 epochs to these
  # lengths when avpc-proto joined them (about 35 CPU-min each): three runs finishing inside the session.
  # IAL-CMS supervised drops its separator's LR x0.1 for the last 15 % (the reference keeps 1e-4
  # throughout; AVPC's segments peaked right after their drops).
  case "$NAME-$PRECISION-${SEG:-2}" in
    avpc-bf16-3) epochs=50; lr 35,45 ;;
    avpc-bf16-4) epochs=44; lr 30,40 ;;
    avpc-proto-bf16-*) epochs=24; lr 17,22 ;;
    # segment 4 (session 16): 70 epochs, sized to end inside the session beside two other runs
    ialcms-sup-bf16-4) epochs=70; plan+=(--lr-steps 60) ;;
    # segments 5 and 6 (session 18): two runs side by side from segment 3's weights (data seeds 5 and 6), at
    # the constant 1e-4 of the reference, every epoch's weights kept; the mean of both runs' epochs 60-90
    # (scripts/ship_run.py RUNS/ialcms-sup-s5 --also RUNS/ialcms-sup-s6 --average-from 60) was shipped
    ialcms-sup-bf16-5|ialcms-sup-bf16-6) epochs=90; plan+=(--lr-steps "" --keep-every 1) ;;
    ialcms-sup-bf16-*) epochs=85; plan+=(--lr-steps 72) ;;
    # Sound-of-Pixels segment 3 (session 16, 1.25 CPU-min per epoch): 45 epochs bring its lineage past
    # three CPU-hours; 1e-4 for 70 % again
    sop-bf16-3) epochs=45; lr 32,40 ;;
    # AVPC-RCoP segment 2 (session 17, 1.46 CPU-min per epoch): 68 epochs bring its lineage to three
    # CPU-hours; 1e-4 for 70 % again
    avpc-rcop-bf16-2) epochs=68; lr 47,61 ;;
    # segments 3 and 4 (session 18): two runs side by side from segment 2's weights (data seeds 3 and 4) for
    # weight averaging, as supervised IAL-CMS's segments 5 and 6: one epoch at 1e-3/1e-4, then x0.1 for good,
    # every epoch's weights kept. Stopped after 18 and 17 epochs: their mean scored as -s2 on 128 val
    # mixtures (3.49 against 3.55), not shipped
    avpc-rcop-bf16-3|avpc-rcop-bf16-4) epochs=40; lr 1; plan+=(--keep-every 1) ;;
    avpc-bf16-*) epochs=30; lr 21,27 ;;
    avpc-fp32-*) epochs=20; lr 14,18 ;;
    ialcms-bf16-*) epochs=19 ;;
    ialcms-fp32-*) epochs=9 ;;
  esac
  [ "$NAME" = avpc-rcop ] && args=(--method avpc)  # RCoP was the first segment's stage 1
  # a new data seed per segment: with --seed 0 alone a segment replays its parent's mixtures epoch for
  # epoch (the segments up to session 15's did)
  args+=(--init-from "$FROM" --data-seed "${SEG:-2}")
  NAME="$NAME-s${SEG:-2}"
fi

run="$RUNS/$NAME"
mkdir -p "$RUNS"
echo "== $(date -u +%FT%TZ) $NAME (code ${CODE:-installed}, $PRECISION)"
if [ -f "$run/last.pt" ]; then
  # --epochs, --max-cpu-minutes and the plan: a run re-sized here continues to its new length and schedule
  avsep train --resume "$run" --epochs "$epochs" --max-cpu-minutes "$cap" "${plan[@]}"
elif [ "$NAME" = avpc-rcop ] && [ -f "$run/rcop/last.pt" ]; then
  # interrupted in stage 1: finish the RCoP stage, then start stage 2 from it as --rcop would
  avsep train --resume "$run/rcop" --max-cpu-minutes "$cap"
  avsep train "${common[@]}" --method avpc --init-from "$run/rcop/last.pt" "${plan[@]}" --epochs "$epochs" \
    --max-cpu-minutes "$cap" --run "$run"
else
  avsep train "${common[@]}" "${args[@]}" "${plan[@]}" --epochs "$epochs" --max-cpu-minutes "$cap" --run "$run"
fi
