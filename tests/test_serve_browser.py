"""The web page of ``aetnet serve`` in a real headless browser: `aetnet serve` started as a process on
loopback with a tiny FUNSD model, Debian's Chromium driven through chromedriver (selenium). A real
sample page is uploaded through the page's file input; the picture shown and the JSON shown are
checked against the Predictor run directly and against the uploaded page's own pixels.

Needs ``chromium`` and ``chromium-driver`` (scripts/setup.sh installs them with apt when root) and
selenium (the ``test`` extra). Missing pieces fail the test with the command that installs them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aetnet.predict import Predictor

PAGE = "funsd/dataset/testing_data/images/82092117.png"
INSTALL_BROWSER = ("apt-get install -y chromium chromium-driver (or run scripts/setup.sh as root); "
                   "pip install selenium (the test extra)")
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-extensions", "--no-first-run", "--window-size=1400,1000")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(funsd_run, aetnet_cache, tmp_path_factory):
    """``aetnet serve`` started in its own process (one worker); yields ``(base URL, process, log)``.
    The process is only started here: the browser starts while the model loads."""
    log = tmp_path_factory.mktemp("browser-server") / "server.log"
    port = free_port()
    env = dict(os.environ, AETNET_CACHE=str(aetnet_cache), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "aetnet", "serve", str(funsd_run), "--port", str(port), "--threads", "2"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    yield f"http://127.0.0.1:{port}/", proc, log
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through chromedriver, with its own profile folder; quit at the end."""
    driver_path = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is missing: {INSTALL_BROWSER}")
    if not driver_path or not Path(driver_path).is_file():
        pytest.fail(f"chromedriver is not on PATH (or $CHROMEDRIVER is not a file): {INSTALL_BROWSER}")
    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    try:  # the driver's path is given: Selenium Manager (which downloads) is not used
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as exc:
        pytest.fail(f"headless Chromium did not start through {driver_path}: {str(exc).strip()}; {INSTALL_BROWSER}")
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_url(server, browser) -> str:
    """The server's URL once ``/health`` answers (bounded wait; the log is shown if it never does)."""
    base, proc, log = server
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail(f"aetnet serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}health", timeout=5) as resp:
                if resp.status == 200:
                    return base
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"aetnet serve did not answer within 180 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def wait_until(driver, condition, what: str, timeout: float = 60):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        status = driver.execute_script("return document.getElementById('status').textContent;")
        pytest.fail(f"the web page did not show {what} within {timeout} s (status line: {status!r})")


def upload(driver, url: str, path: Path) -> None:
    """Open the page, wait for the model line, choose ``path`` in the (hidden) file input, as a click on
    the drop zone would (WebDriver sends files to hidden file inputs)."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_until(driver, lambda d: "model (" in d.find_element(By.ID, "model").text, "the model line")
    driver.find_element(By.ID, "file").send_keys(str(path.resolve()))


def shown_pixels(driver) -> np.ndarray:
    """The first shown picture's pixels as the browser decoded them (drawn on a canvas at natural size,
    read back as a lossless PNG): ``(H, W, 3)`` uint8."""
    url = driver.execute_script(
        "const i = document.querySelector('img.prediction'); const c = document.createElement('canvas');"
        "c.width = i.naturalWidth; c.height = i.naturalHeight; c.getContext('2d').drawImage(i, 0, 0);"
        "return c.toDataURL('image/png');")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def check_json(shown: list[dict], want: list[dict], name: str) -> None:
    """The JSON view equals the Predictor's records (scores up to float rounding), image field left out."""
    assert len(shown) == len(want) == 1
    got, exp = shown[0], want[0]
    assert "image" not in got
    assert got["file"] == name and got["kind"] == "token" and got["page"] == exp["page"] == 1
    assert got["size"] == exp["size"] and got["source"] == exp["source"]
    assert [w["text"] for w in got["words"]] == [w["text"] for w in exp["words"]]
    assert [w["box"] for w in got["words"]] == [w["box"] for w in exp["words"]]
    assert [w["label"] for w in got["words"]] == [w["label"] for w in exp["words"]]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(got["words"], exp["words"])) <= 1e-5
    assert got["entities"] == exp["entities"]


def check_picture(pixels: np.ndarray, page: Path, record: dict) -> None:
    """The picture is the uploaded page with the prediction drawn on it: unchanged far from every box,
    coloured inside each entity's words (the page itself is grey)."""
    original = np.asarray(Image.open(page).convert("RGB"))
    assert pixels.shape == original.shape
    near_box = np.zeros(original.shape[:2], dtype=bool)
    for box in [w["box"] for w in record["words"]] + [e["box"] for e in record["entities"]]:
        x0, y0, x1, y1 = (int(v) for v in box)
        near_box[max(0, y0 - 6):y1 + 6, max(0, x0 - 6):x1 + 6] = True  # fills and outlines
    for ent in record["entities"]:  # the entity type written above its box
        x0, y0 = int(ent["box"][0]), int(ent["box"][1])
        near_box[max(0, y0 - 16):y0 + 1, max(0, x0 - 2):x0 + 10 * len(ent["type"]) + 10] = True
    assert (~near_box).sum() > 0.2 * near_box.size
    assert np.array_equal(pixels[~near_box], original[~near_box])
    assert np.array_equal(original[..., 0], original[..., 2])  # a grey page: colour comes from the drawing
    coloured = (pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 10
    undrawn = [ent for ent in record["entities"] if not coloured[
        int(record["words"][ent["words"][0]]["box"][1]):int(record["words"][ent["words"][0]]["box"][3]) + 1,
        int(record["words"][ent["words"][0]]["box"][0]):int(record["words"][ent["words"][0]]["box"][2]) + 1].any()]
    assert undrawn == [], "entities not drawn on the picture"


def test_web_page_in_headless_chromium_shows_the_picture_and_the_json(page_url, browser, funsd_run, shared_data):
    from selenium.webdriver.common.by import By

    page = shared_data / PAGE
    want = Predictor(funsd_run).predict_file(page)
    assert want[0]["entities"], "the tiny model predicts entities on this page (else the picture check is weak)"
    upload(browser, page_url, page)
    wait_until(browser, lambda d: d.execute_script(
        "const i = document.querySelector('img.prediction');"
        "return i !== null && i.complete && i.naturalWidth > 0 && document.getElementById('json').textContent;"),
        "the picture and the JSON", timeout=120)
    size = browser.execute_script(
        "const i = document.querySelector('img.prediction'); return [i.naturalWidth, i.naturalHeight];")
    rendered = browser.execute_script("return document.querySelector('img.prediction').clientWidth;")
    assert size == want[0]["size"] and rendered > 0
    assert len(browser.find_elements(By.CSS_SELECTOR, "img.prediction")) == 1
    check_json(json.loads(browser.find_element(By.ID, "json").text), want, page.name)
    check_picture(shown_pixels(browser), page, want[0])
    status = browser.find_element(By.ID, "status").text
    assert status == f"{page.name}: 1 page(s); page 1: {len(want[0]['entities'])} entities"
    assert not browser.find_element(By.ID, "question-row").is_displayed()  # a token model asks no question


def test_web_page_in_headless_chromium_shows_a_bad_upload_error(page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50)
    upload(browser, page_url, broken)
    wait_until(browser, lambda d: d.find_element(By.ID, "status").get_attribute("class") == "error",
               "the error line")
    status = browser.find_element(By.ID, "status").text
    assert status.startswith("error 400: broken.png") and "cannot be decoded" in status
    assert browser.find_elements(By.CSS_SELECTOR, "img.prediction") == []
    assert browser.find_element(By.ID, "json").text == ""
