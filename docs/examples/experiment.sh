#!/usr/bin/env bash
# A sweep of docs/experiments.md ("Other sweeps"): plain LaMa (the baseline) against refinement with
# pyramid.min_side=64 (2-3 scales on these photos), on small photos with LaMa's "thick" masks
# generated per image; one comparison (means, paired differences, bins) and plot at the end.
#
#   docs/examples/experiment.sh OUTDIR [MODEL] [GT_DIR]
#
# MODEL: a checkpoint for model.path (default: the built-in model). GT_DIR: a folder of photos
# (default: the golden test fixtures' three photos, copied to OUTDIR/gt).
set -euo pipefail
out=${1:?usage: experiment.sh OUTDIR [MODEL] [GT_DIR]}
model=${2:-}
gt=${3:-}
if [[ -z "$gt" ]]; then
  gt="$out/gt"
  mkdir -p "$gt"
  for case in tests/fixtures/golden/*/; do cp "$case/image.png" "$gt/$(basename "$case").png"; done
fi
python -m lama_refine.app.evaluate --multirun gt_dir="$gt" outdir="$out/eval" ${model:+model.path="$model"} \
  masks.family=thick masks.seed=0 visuals=3 progress=false \
  pyramid.min_side=64 refine=false,true
ls -d "$out"/eval/sweeps/*/ | tail -1
