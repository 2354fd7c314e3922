"""A screenshot of a `report.html` as a browser shows it: Debian's chromium, headless, through
selenium and the system's chromedriver (`apt-get install chromium chromium-driver`), the pair
`tests/app/test_report.py` drives.

The page is opened from the disk, its pictures are waited for, and the window is cropped to
`--height` pixels from the top (the tables and the first images' panes at 1:1 pixels on the hole).

    python tools/screenshot_report.py OUTDIR/eval/sweeps/<time>/report.html --out docs/images/report-study.jpg
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

from PIL import Image

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser_problem() -> str | None:
    """Why `headless_chromium` cannot start here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        return f"{CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
    return None


def headless_chromium(width: int = 1400, height: int = 1000):
    """A selenium driver of the system's chromium (never a downloaded browser or driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def pictures_loaded(driver, timeout: float = 30.0) -> bool:
    script = "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if driver.execute_script(script):
            return True
        time.sleep(0.2)
    return False


def screenshot(report: Path, out: Path, width: int, height: int) -> Image.Image:
    driver = headless_chromium(width, height)
    try:
        # the window's size includes room for a toolbar: set the page's own (CSS px, 1:1 device px)
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        driver.get(report.resolve().as_uri())
        if not pictures_loaded(driver):
            raise SystemExit(f"{report}: not every picture loaded within 30 s")
        shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    finally:
        driver.quit()
    out.parent.mkdir(parents=True, exist_ok=True)
    shot.save(out, quality=85)  # a PNG ignores the quality
    return shot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report.html written by lama-refine-eval")
    parser.add_argument("--out", type=Path, required=True, help="the picture (.jpg or .png)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1300)
    args = parser.parse_args()
    if not args.report.is_file():
        parser.error(f"report: {args.report} is not a file; give the report.html a run or sweep wrote")
    if args.out.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        parser.error(f"--out: {args.out} is neither .jpg nor .png")
    if problem := browser_problem():
        parser.error(f"cannot start the browser: {problem}")
    shot = screenshot(args.report, args.out, args.width, args.height)
    print(f"{args.out}: {shot.width}x{shot.height}")


if __name__ == "__main__":
    main()
