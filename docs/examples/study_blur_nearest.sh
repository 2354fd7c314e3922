#!/usr/bin/env bash
# The worked study of docs/experiments.md: does the original's blurred pyramid mask
# (pyramid_mask=blur, the default) beat nearest-neighbour halving (pyramid_mask=nearest) at 1-2.5 K?
# The demo model on the four held-out Debian wallpapers (never trained on; licences in
# docs/default-model.md), shrunk to SHORT_SIDE (default 800: 1280x800 to 1200x800; 1600: 2560x1600,
# Storm stays 1920x1280), with their mirror images unless MIRRORS is "no", one generated LaMa
# "thick" mask each (seeded by the image's name, so a mirror gets another mask).
#
#   docs/examples/study_blur_nearest.sh OUTDIR [SHORT_SIDE [MIRRORS]]
#   docs/examples/study_blur_nearest.sh outputs/study               # 8 images at 1.2-1.3 K
#   docs/examples/study_blur_nearest.sh outputs/study-2k5 1600 no   # 4 images at 1.9-2.5 K
set -euo pipefail
out=${1:?usage: study_blur_nearest.sh OUTDIR [SHORT_SIDE [MIRRORS]]}
mkdir -p "$out/gt"
python - "$out/gt" "${2:-800}" "${3:-yes}" <<'PY'
import sys
from pathlib import Path
from PIL import Image
from lama_refine.train.data import HOLDOUT, load_photos
for name, photo in load_photos(HOLDOUT, max_short_side=int(sys.argv[2])).items():  # apt-get download, once
    stem = Path(sys.argv[1]) / name.replace("/", "_")
    Image.fromarray(photo).save(f"{stem}.png")
    if sys.argv[3] != "no":
        Image.fromarray(photo[:, ::-1].copy()).save(f"{stem}_mirrored.png")
PY
lama-refine-eval --multirun gt_dir="$out/gt" outdir="$out/eval" masks.family=thick masks.seed=0 \
  visuals=4 progress=false trace="$out/trace" pyramid_mask=blur,nearest
ls -d "$out"/eval/sweeps/*/ | tail -1
