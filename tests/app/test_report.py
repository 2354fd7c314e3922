"""report.html: what the page holds (fast, from a constructed run folder) and, in a real browser
(Debian's chromium driven by selenium), that it works: every picture loads, a column sorts, the
panes of an image zoom and pan together."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GOLDEN, Case
from PIL import Image

from lama_refine.app.report import REPORT, has_pictures, hole_box, hole_centre, save_pictures, write_report

REPO = Path(__file__).resolve().parents[2]
MODEL = Case(GOLDEN / "odd_nonsquare_2scales").path / "generator.safetensors"
_spec = importlib.util.spec_from_file_location("screenshot_report", REPO / "tools" / "screenshot_report.py")
assert _spec is not None and _spec.loader is not None
SCREENSHOT = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(SCREENSHOT)


def constructed_run(folder: Path, names=("a", "sub/b"), setting="refined", job=0) -> Path:
    """A run's folder as lama-refine-eval leaves it: tables, summary and the report's pictures."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, name in enumerate(names):
        truth = torch.rand(1, 3, 30, 40, generator=torch.Generator().manual_seed(i))
        mask = torch.zeros(1, 1, 30, 40)
        mask[..., 10 + i : 20, 5:25] = 1
        save_pictures(folder, name, truth * (1 - mask), truth, truth.flip(-1), mask)
        rows.append({"image": name, "hole_fraction": 0.1, "bin": "10-20%", "psnr": 20.0 + i + job, "hole_l1": 0.1})
    (folder / "metrics.csv").write_text(
        "image,hole_fraction,bin,psnr,hole_l1\n"
        + "".join(f"{r['image']},0.1,10-20%,{r['psnr']},0.1\n" for r in rows)
        + f"mean,0.1,,{np.mean([r['psnr'] for r in rows])},0.1\n"
    )
    (folder / "bins.csv").write_text("bin,n_images,psnr\n10-20%,2,20.5\noverall,2,20.5\n")
    summary = {"setting": setting, "job": job, "n_images": len(rows), "mean": {}, "bins": [], "images": rows}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def sources(text: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', text)


def test_pictures_are_written_and_found(tmp_path):
    run = constructed_run(tmp_path / "run")
    assert has_pictures(run, "sub/b") and not has_pictures(run, "c")
    assert hole_box(run / "masks" / "a_mask.png") == (5, 10, 25, 20)
    assert Image.open(run / "outputs" / "a.png").size == (40, 30)
    (run / "truth" / "a.png").unlink()
    assert not has_pictures(run, "a")


def test_one_run_report_links_its_pictures_tables_and_traces(tmp_path):
    run = constructed_run(tmp_path / "run")
    (run / "trace" / "a").mkdir(parents=True)
    (run / "trace" / "a" / "index.html").write_text("<html></html>")
    text = write_report(run).read_text()
    links = sources(text)
    assert links and all(not link.startswith(("http:", "https:", "//")) for link in links)  # no network
    assert all((run / link).is_file() for link in links)
    assert "trace/a/index.html" in links
    assert sum(link.startswith("outputs/") for link in links) == 2
    assert text.count('<section class="viewer"') == 2
    # the mean stays under the per-image rows; the hole of `a` is centred
    assert re.search(r'<tr class="pinned"><td>mean</td>', text)
    assert 'data-cx="15.0" data-cy="15.0"' in text
    # a lossless PSNR sorts as JavaScript's Infinity; a NaN as an empty cell
    (run / "metrics.csv").write_text("image,psnr\na,inf\nb,nan\nmean,inf\n")
    text = write_report(run).read_text()
    assert '<td class="num" data-v="Infinity">inf</td>' in text and '<td class="num" data-v="">nan</td>' in text


def test_the_view_starts_inside_the_hole_even_when_the_box_centre_is_not(tmp_path):
    mask = np.zeros((100, 200), np.uint8)
    mask[10:90, 10:30] = 255  # two strokes, far apart: the box's centre (100, 50) is between them
    mask[10:90, 170:190] = 255
    mask[40:60, 150:170] = 255  # the right stroke is heavier, so the centroid leans right
    Image.fromarray(mask).save(tmp_path / "m.png")
    cx, cy = hole_centre(tmp_path / "m.png")
    assert mask[int(cy), int(cx)] and 150 <= cx < 190  # in the hole, the one nearest the centroid
    Image.fromarray(mask[10:90, 10:30]).save(tmp_path / "solid.png")
    assert hole_centre(tmp_path / "solid.png") == (10.0, 40.0)  # a solid hole: its centroid
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty.png")
    assert hole_centre(tmp_path / "empty.png") is None and hole_box(tmp_path / "empty.png") is None


def test_sweep_report_puts_every_setting_side_by_side(tmp_path):
    sweep = tmp_path / "sweep"
    constructed_run(sweep / "refine=True", setting="refine=True", job=0)
    constructed_run(sweep / "refine=False", names=("a",), setting="refine=False", job=1)
    (sweep / "comparison.csv").write_text("setting,n_images,psnr,psnr_diff\nrefine=True,2,20.5,\nrefine=False,1,21,1\n")
    text = write_report(sweep, sweep=True).read_text()
    assert all((sweep / link.replace("%3D", "=")).is_file() for link in sources(text))
    assert 'href="refine%3DTrue/report.html"' not in text  # the settings' own pages are not written yet
    write_report(sweep / "refine=True")
    text = write_report(sweep, sweep=True).read_text()
    assert 'href="refine%3DTrue/report.html"' in text
    viewers = text.split('<section class="viewer"')[1:]
    assert len(viewers) == 2
    # a: input, both settings, truth; sub/b: the second setting did not measure it
    assert viewers[0].count("<img") == 4 and viewers[1].count("<img") == 3
    assert viewers[0].index("refine=True") < viewers[0].index("refine=False")


def test_traces_written_outside_the_sweep_are_linked_where_they_are(tmp_path):
    sweep = tmp_path / "eval" / "sweeps" / "t"
    for job, setting in enumerate(("pyramid_mask=blur", "pyramid_mask=nearest")):
        constructed_run(sweep / setting, setting=setting, job=job)
        summary_file = sweep / setting / "summary.json"
        summary = json.loads(summary_file.read_text())
        summary["trace"] = str(tmp_path / "traces" / setting)  # trace=DIR puts each setting under DIR
        summary_file.write_text(json.dumps(summary))
        (tmp_path / "traces" / setting / "a").mkdir(parents=True)
        (tmp_path / "traces" / setting / "a" / "index.html").write_text("<html></html>")
    text = write_report(sweep, sweep=True).read_text()
    traces = [link for link in sources(text) if link.endswith("index.html")]
    assert traces == [
        "../../../traces/pyramid_mask%3Dblur/a/index.html",
        "../../../traces/pyramid_mask%3Dnearest/a/index.html",
    ]
    assert all((sweep / link.replace("%3D", "=")).resolve().is_file() for link in traces)


# --- in a real browser --------------------------------------------------------------------------


def browser():
    """Headless chromium through the system's chromedriver (never a downloaded one); skipped
    where they are missing, except under CI=true, where the test fails: CI must run it."""
    problem = SCREENSHOT.browser_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the browser test must run in CI, but {problem}")
        pytest.skip(problem)
    return SCREENSHOT.headless_chromium()  # tools/screenshot_report.py: the same browser, one setup


def wait_for(condition, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the page")


def column(driver, table, index: int) -> list[str]:
    """A column's cells top to bottom: a number's full value, else its text."""
    script = "return Array.from(arguments[0].tBodies[0].rows).map(r => r.cells[arguments[1]])"
    return [c.get_attribute("data-v") or c.text for c in driver.execute_script(script, table, index)]


@pytest.mark.slow  # a subprocess sweep and a browser
def test_report_of_a_real_sweep_works_in_a_browser(tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By

    driver = browser()
    try:
        gt = tmp_path / "gt"
        gt.mkdir()
        photo = np.asarray(Image.open(GOLDEN / "odd_nonsquare_2scales" / "image.png"))
        for i in range(2):
            Image.fromarray(photo[i * 20 : i * 20 + 72, i * 30 : i * 30 + 104]).save(gt / f"crop{i}.png")
        out = tmp_path / "out"
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        args = [f"gt_dir={gt}", f"outdir={out}", f"model.path={MODEL}", "progress=false", "visuals=1"]
        args += ["warmup=false", "lpips=null", "refiner.n_iters=2", "pyramid=fixed", "refine=true,false"]
        args += [f"trace={tmp_path / 'traces'}"]
        proc = subprocess.run(
            [sys.executable, "-m", "lama_refine.app.evaluate", "--multirun", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        (sweep,) = (out / "sweeps").iterdir()
        report = sweep / REPORT
        assert (sweep / "refine=True" / REPORT).is_file()  # each run has its own as well

        driver.get(report.as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == 2 * 4  # two images: input, two settings, truth
        loaded = "return arguments[0].complete && arguments[0].naturalWidth"
        assert wait_for(lambda: all(driver.execute_script(loaded, img) for img in images))
        assert all(driver.execute_script("return arguments[0].naturalWidth", img) == 104 for img in images)

        table = driver.find_element(By.CSS_SELECTOR, "table.sortable")
        headers = [th.text for th in table.find_elements(By.TAG_NAME, "th")]
        psnr = headers.index("psnr")
        before = column(driver, table, psnr)
        assert len(set(before)) == 2  # refining changes the result
        table.find_elements(By.TAG_NAME, "th")[psnr].click()
        ascending = column(driver, table, psnr)
        assert [float(v) for v in ascending] == sorted(float(v) for v in before)
        table.find_elements(By.TAG_NAME, "th")[psnr].click()
        assert column(driver, table, psnr) == ascending[::-1]

        viewer = driver.find_elements(By.CSS_SELECTOR, ".viewer")[0]
        panes = viewer.find_elements(By.CSS_SELECTOR, ".port")
        transforms = "return Array.from(arguments[0].querySelectorAll('.port img')).map(i => i.style.transform)"
        start = driver.execute_script(transforms, viewer)
        assert len(set(start)) == 1 and "scale(1)" in start[0]  # 1:1 pixels (headless: devicePixelRatio 1)
        ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(panes[1]), 0, -300).perform()
        zoomed = wait_for(lambda: (t := driver.execute_script(transforms, viewer)) != start and t)
        assert len(set(zoomed)) == 1 and "scale(1)" not in zoomed[0]
        ActionChains(driver).drag_and_drop_by_offset(panes[2], 30, 20).perform()
        panned = driver.execute_script(transforms, viewer)
        assert len(set(panned)) == 1 and panned != zoomed
        other = driver.find_elements(By.CSS_SELECTOR, ".viewer")[1]
        assert "scale(1)" in driver.execute_script(transforms, other)[0]  # the other image stays

        driver.save_screenshot(str(tmp_path / "report.png"))
        assert Image.open(tmp_path / "report.png").width > 0

        # on a HiDPI screen 1:1 is one image pixel on one device pixel: a CSS scale of 1/devicePixelRatio
        metrics = {"width": 1400, "height": 1000, "deviceScaleFactor": 2, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        driver.refresh()
        first = lambda: driver.find_elements(By.CSS_SELECTOR, ".viewer")[0]  # noqa: E731
        assert wait_for(lambda: "scale(0.5)" in driver.execute_script(transforms, first())[0])
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        driver.refresh()

        # the trace (written outside the sweep's folder, by the refining setting only) opens from the page
        (link,) = driver.find_elements(By.CSS_SELECTOR, "a[href$='index.html']")
        link.click()
        assert wait_for(lambda: "trace" in driver.title.lower() and driver.current_url.endswith("/crop0/index.html"))
        trace_images = driver.find_elements(By.TAG_NAME, "img")
        assert trace_images and wait_for(lambda: all(driver.execute_script(loaded, img) for img in trace_images))
    finally:
        driver.quit()
