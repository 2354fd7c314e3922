"""LaMa's mask-area bins and the paired comparison of a sweep's settings (lama_refine.metrics.stats and
evaluate.write_comparison), on constructed cases whose answers are known."""

import csv
import json
import math

import numpy as np
import pytest

from lama_refine.app.evaluate import bin_table, comparison_figure, paired_rows, pick_baseline, write_comparison
from lama_refine.errors import UserError
from lama_refine.metrics.stats import area_bin, bin_names, bootstrap_interval, paired


def test_bins_are_lamas_names_and_edges():
    assert bin_names() == [
        "0-10%",
        "10-20%",
        "20-30%",
        "30-40%",
        "40-50%",
        "50-60%",
        "60-70%",
        "70-80%",
        "80-90%",
        "90-100%",
    ]
    # left edge inclusive (searchsorted side='right'), an area of 1 in the last bin
    assert [area_bin(a) for a in (0.0, 0.0999, 0.1, 0.15, 0.5, 0.9, 0.95, 1.0)] == [0, 0, 1, 1, 5, 9, 9, 9]
    assert bin_names(4) == ["0-25%", "25-50%", "50-75%", "75-100%"]
    assert bin_names(100)[:2] == ["0.0-1.0%", "1.0-2.0%"]  # LaMa's decimals for more than 10 bins


def test_bin_table_counts_images_and_averages_per_bin():
    rows = [
        {"bin": "0-10%", "psnr": 30.0, "ssim": 0.9},
        {"bin": "0-10%", "psnr": 20.0, "ssim": 0.7},
        {"bin": "40-50%", "psnr": 10.0, "ssim": 0.5},
    ]
    table = bin_table(rows)
    assert [(r["bin"], r["n_images"]) for r in table] == [("0-10%", 2), ("40-50%", 1), ("overall", 3)]
    assert table[0]["psnr"] == 25.0 and table[2]["psnr"] == 20.0


def test_bootstrap_of_two_images_is_their_extremes():
    # resampled means of [0, 1] are 0, 1/2, 1 with chances 1/4, 1/2, 1/4: the central 95 % spans 0..1
    assert bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_interval([0.25] * 7) == (0.25, 0.25)


def test_bootstrap_interval_matches_the_normal_one_on_many_images():
    rng = np.random.default_rng(3)
    d = rng.normal(0.5, 2.0, size=400)
    low, high = bootstrap_interval(d, seed=1)
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert low < d.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert bootstrap_interval(d, seed=1) == (low, high)  # seeded: the same results, the same interval
    assert bootstrap_interval(d, seed=2) != (low, high)


def test_paired_counts_wins_ties_and_losses_in_the_metric_direction():
    base = [1.0, 2.0, 3.0, 4.0]
    other = [0.5, 2.0, 3.5, 3.0]  # differences -0.5, 0, +0.5, -1
    lower_better = paired(base, other, higher_is_better=False)
    assert (lower_better.wins, lower_better.ties, lower_better.losses) == (2, 1, 1)
    assert lower_better.mean == pytest.approx(-0.25)
    higher_better = paired(base, other, higher_is_better=True)
    assert (higher_better.wins, higher_better.ties, higher_better.losses) == (1, 1, 2)
    both_lossless = paired([math.inf, 30.0], [math.inf, 31.0], higher_is_better=True)
    assert (both_lossless.wins, both_lossless.ties, both_lossless.mean) == (1, 1, 0.5)


def sweep(tmp_path, settings: dict[str, list[float]]):
    """Job summaries as evaluate() writes them: per-image PSNR and hole L1 of each setting."""
    for job, (setting, psnrs) in enumerate(settings.items()):
        images = [{"image": f"im{i}", "bin": "0-10%", "psnr": p, "hole_l1": 1.0 / p} for i, p in enumerate(psnrs)]
        mean = {"psnr": float(np.mean(psnrs)), "hole_l1": float(np.mean([r["hole_l1"] for r in images]))}
        (tmp_path / setting).mkdir()
        (tmp_path / setting / "summary.json").write_text(
            json.dumps(
                {
                    "setting": setting,
                    "job": job,
                    "n_images": len(images),
                    "mean": mean,
                    "images": images,
                    "bins": bin_table(images),
                }
            )
        )


def test_comparison_reports_each_setting_against_the_baseline(tmp_path):
    sweep(
        tmp_path,
        {"refine=False": [20.0, 30.0, 25.0], "refine=True": [21.0, 31.0, 25.0], "refine=True,n=2": [19.0, 30.0, 24.0]},
    )
    rows = write_comparison(tmp_path)  # baseline: the first setting
    with open(tmp_path / "comparison.csv") as f:
        table = {r["setting"]: r for r in csv.DictReader(f)}
    assert table["refine=True"]["psnr_diff"] == str(2 / 3)
    assert (
        table["refine=True"]["psnr_wins"],
        table["refine=True"]["psnr_ties"],
        table["refine=True"]["psnr_losses"],
    ) == ("2", "1", "0")
    assert (table["refine=True,n=2"]["psnr_wins"], table["refine=True,n=2"]["psnr_losses"]) == ("0", "2")
    assert table["refine=False"]["psnr_diff"] == ""  # the baseline is not compared with itself
    text = (tmp_path / "comparison.md").read_text()
    assert "minus the baseline **refine=False**" in text and "| refine=True | PSNR (dB) | 3 | +0.667 |" in text
    assert "| refine=True | 0-10% | 3 |" in text  # the per-bin table
    assert (tmp_path / "comparison_bins.csv").is_file() and (tmp_path / "comparison.png").is_file()
    assert len(rows) == 3

    write_comparison(tmp_path, baseline="refine=true")  # by name, case aside
    with open(tmp_path / "comparison.csv") as f:
        table = {r["setting"]: r for r in csv.DictReader(f)}
    assert float(table["refine=False"]["psnr_diff"]) == pytest.approx(-2 / 3)


def test_an_unknown_baseline_names_the_settings(tmp_path):
    sweep(tmp_path, {"a=1": [1.0, 2.0], "a=2": [1.0, 3.0]})
    rows = write_comparison(tmp_path, baseline=1)
    assert pick_baseline(rows, 1)["setting"] == "a=2"
    with pytest.raises(UserError, match="baseline=a=3: not a setting of this sweep; its settings are a=1, a=2"):
        pick_baseline(rows, "a=3")


def test_plot_shows_differences_with_intervals_on_an_axis_with_zero(tmp_path):
    pytest.importorskip("matplotlib")
    sweep(tmp_path, {"s0": [30.0, 30.0, 30.0, 30.0], "s1": [30.012, 30.011, 30.013, 30.012]})
    from lama_refine.app.evaluate import collect

    rows = collect(tmp_path)
    pairs = paired_rows(rows, rows[0])
    fig = comparison_figure(rows, ["psnr", "hole_l1"], pairs=pairs, baseline="s0")
    psnr_axis = fig.axes[0]
    low, high = psnr_axis.get_ylim()
    assert low < 0 < high  # a 0.012 dB gap is drawn next to zero, not zoomed to fill the panel
    assert high < 0.02
    assert any(line.get_ydata()[0] == 0 for line in psnr_axis.get_lines())  # the zero line
