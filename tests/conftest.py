"""Shared test set-up: offline, deterministic, small models, Ray without auth files."""

import base64
import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from tinyvit import VARIANTS  # noqa: E402


@pytest.fixture(params=sorted(VARIANTS))
def variant(request):
    """Each small ViT layout in turn."""
    return request.param


@pytest.fixture
def one_thread():
    """Tiny models run fastest, and least at the mercy of a busy machine, on one thread."""
    import torch  # here, not at the top: most tests that need no torch stay light

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Screenshots the browser tests keep (build/ is ignored by git); CI may point it elsewhere.
ARTIFACTS = os.environ.get("SFPROMPT_TEST_ARTIFACTS",
                           os.path.join(os.path.dirname(__file__), "..", "build", "test-artifacts"))


@pytest.fixture(scope="session")
def browser():
    """`render(html_path, screenshot_name) -> figures`: open the page in Debian's headless
    Chromium (.ci/run installs it), fail on any console error or on a plotly figure that
    drew nothing, save a full-page screenshot under ARTIFACTS, and return how many
    figures drew. Skipped where Chromium is missing, except in CI."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} missing; .ci/run installs them")
        pytest.skip("Debian chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # This machine has no network: without the background-networking flags Chromium
    # keeps trying (and logging) connections that are refused.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    os.makedirs(ARTIFACTS, exist_ok=True)

    def render(path, screenshot: str) -> int:
        driver.get(f"file://{os.path.abspath(path)}")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        drawn = driver.execute_script(
            "const divs = [...document.querySelectorAll('.plotly-graph-div')];"
            "return divs.every(d => d.querySelector('g.trace')) ? divs.length : -1;")
        assert drawn >= 0, f"{path}: a figure drew nothing"
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                     "scale": 1}})
        with open(os.path.join(ARTIFACTS, screenshot), "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        return drawn

    yield render
    driver.quit()
