#!/usr/bin/env bash
# The worked study of docs/experiments.md: does the original's blurred pyramid mask
# (pyramid_mask=blur, the default) beat nearest-neighbour halving (pyramid_mask=nearest) at 1-2 K?
# The demo model on the four held-out Debian wallpapers (never trained on; licences in
# docs/default-model.md) and their mirror images, short side 800 px (1280x800 to 1200x800), one
# generated LaMa "thick" mask each (seeded by the image's name, so a mirror gets another mask).
#
#   docs/examples/study_blur_nearest.sh OUTDIR
set -euo pipefail
out=${1:?usage: study_blur_nearest.sh OUTDIR}
mkdir -p "$out/gt"
python - "$out/gt" <<'PY'
import sys
from pathlib import Path
from PIL import Image
from lama_refine.train.data import HOLDOUT, load_photos
for name, photo in load_photos(HOLDOUT, max_short_side=800).items():  # apt-get download, once
    stem = Path(sys.argv[1]) / name.replace("/", "_")
    Image.fromarray(photo).save(f"{stem}.png")
    Image.fromarray(photo[:, ::-1].copy()).save(f"{stem}_mirrored.png")
PY
lama-refine-eval --multirun gt_dir="$out/gt" outdir="$out/eval" masks.family=thick masks.seed=0 \
  visuals=4 progress=false trace="$out/trace" pyramid_mask=blur,nearest
ls -d "$out"/eval/sweeps/*/ | tail -1
