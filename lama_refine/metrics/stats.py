"""The statistics of `lama-refine-eval`: LaMa's mask-area bins and paired comparisons of settings.

Bins. LaMa's evaluator (advimman/lama, `saicinpainting/evaluation/evaluator.py`,
`InpaintingEvaluator._get_bin_edges`, used by `bin/evaluate_predicts.py`) groups images by the
share of the image the mask covers: `bins` equal intervals of [0, 1] (`np.linspace(0, 1, bins + 1)`),
an image going to the interval whose left edge is the last one at or below its area
(`np.searchsorted(edges, area, side='right') - 1`), with area 1 in the last bin. The names are
`0-10%` ... `90-100%` for 10 bins (percent rounded to `ceil(log10(bins)) - 1` decimals).
`area_bin` and `bin_names` are that, number for number.

Paired comparison. Every setting of a sweep runs on the same images with the same masks, so a
setting is compared with the baseline image by image: the mean of the per-image differences
(setting minus baseline), a percentile bootstrap 95 % interval of that mean (images resampled
with replacement, a fixed seed, so the same results give the same interval), and how many images
the setting wins, ties and loses on. Two means side by side say neither how sure a difference is
nor whether it comes from every image or from one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LAMA_BINS = 10


def bin_edges(bins: int = LAMA_BINS) -> np.ndarray:
    return np.linspace(0, 1, bins + 1)


def bin_names(bins: int = LAMA_BINS) -> list[str]:
    """LaMa's interval names: `0-10%`, `10-20%`, ..., `90-100%` for 10 bins."""
    edges = bin_edges(bins)
    digits = max(0, math.ceil(math.log10(bins)) - 1)
    return [
        f"{round(100 * edges[i], digits):.{digits}f}-{round(100 * edges[i + 1], digits):.{digits}f}%"
        for i in range(bins)
    ]


def area_bin(area: float, bins: int = LAMA_BINS) -> int:
    """The bin of a mask covering `area` (0..1) of its image, as LaMa's evaluator assigns it."""
    index = int(np.searchsorted(bin_edges(bins), area, side="right")) - 1
    return min(max(index, 0), bins - 1)


@dataclass(frozen=True)
class Paired:
    """One setting against the baseline on one metric, over `n` images both measured."""

    n: int
    mean: float  # mean of (setting - baseline) per image
    low: float  # the 95 % bootstrap interval of that mean
    high: float
    wins: int  # images where the setting is better than the baseline
    ties: int
    losses: int


def bootstrap_interval(
    differences: Sequence[float] | np.ndarray, *, level: float = 0.95, resamples: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `differences`: the images are drawn with
    replacement `resamples` times (generator seeded by `seed`), and the interval holds the central
    `level` of the resampled means."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired(
    baseline: Sequence[float],
    setting: Sequence[float],
    higher_is_better: bool,
    *,
    seed: int = 0,
    resamples: int = 10000,
) -> Paired:
    """`setting` against `baseline`, image by image (both in the same image order). A tie is a
    difference within float rounding (`np.isclose`, rtol 1e-9): identical outputs measure
    identically, and anything more is a real difference, however small."""
    b, s = np.asarray(baseline, dtype=np.float64), np.asarray(setting, dtype=np.float64)
    if b.shape != s.shape:
        raise ValueError(f"paired comparison of {b.size} baseline values with {s.size} values")
    with np.errstate(invalid="ignore"):
        d = s - b
    tie = np.isclose(s, b, rtol=1e-9, atol=1e-12) | ((s == b) & np.isinf(s))
    d = np.where(tie, 0.0, d)  # inf - inf (two lossless PSNRs) is a tie, not NaN
    better = (d > 0) if higher_is_better else (d < 0)
    low, high = bootstrap_interval(d, resamples=resamples, seed=seed)
    return Paired(
        n=int(d.size),
        mean=float(d.mean()) if d.size else math.nan,
        low=low,
        high=high,
        wins=int((better & ~tie).sum()),
        ties=int(tie.sum()),
        losses=int((~better & ~tie).sum()),
    )


__all__ = ["LAMA_BINS", "Paired", "area_bin", "bin_edges", "bin_names", "bootstrap_interval", "paired"]
