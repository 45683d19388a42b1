"""Headless Chromium for the tests that look at pages as a person would: Debian's `chromium` and
`chromium-driver`, driven by Selenium, never anything Selenium would download itself.

Without them the browser tests skip, saying why; under CI (`CI=true`) they fail instead, so a
CI machine that lost its browser cannot pass by skipping."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "tests" / "artifacts"  # CI collects the screenshots from here

# every canvas under the page, shadow roots included (Bokeh draws inside them), with how many
# distinct colours a sample of its pixels holds: 1 means blank
CANVASES_JS = """
const found = [];
const walk = (root) => {
  for (const el of root.querySelectorAll('*')) {
    if (el.tagName === 'CANVAS') found.push(el);
    if (el.shadowRoot) walk(el.shadowRoot);
  }
};
walk(document);
return found.filter(c => c.width > 0 && c.height > 0).map(c => {
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const colours = new Set();
  for (let i = 0; i < data.length; i += 4 * 37) colours.add(data.slice(i, i + 4).join(','));
  return [c.width, c.height, colours.size];
});
"""


def require_browser() -> None:
    """Skip (or, under CI, fail) when Debian's chromium or chromedriver is not installed."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return
    reason = f"browser tests need {' and '.join(missing)}: apt-get install chromium chromium-driver"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: these tests must run, not skip)")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[object]:
    """A headless Chromium session, 1300 px wide."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never fetch a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1300,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def full_page_screenshot(driver: object, path: Path) -> np.ndarray:
    """Save the whole page (not only the window) as a PNG at `path`; returns its pixels."""
    from PIL import Image

    # the bottom of the page's content (a page that fills its window would grow with it)
    bottom = int(
        driver.execute_script(  # type: ignore[attr-defined]
            "return Math.max(...Array.from(document.body.children, e =>"
            " e.getBoundingClientRect().bottom + window.scrollY))"
        )
    )
    driver.set_window_size(1300, min(bottom + 140, 12000))  # type: ignore[attr-defined]
    time.sleep(1.5)  # laid out and drawn again at the new size
    path.parent.mkdir(parents=True, exist_ok=True)
    png = driver.get_screenshot_as_png()  # type: ignore[attr-defined]
    path.write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
