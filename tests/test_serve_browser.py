"""The web page of ``aetnet serve`` in a real headless browser: `aetnet serve` started as a process on
loopback with a tiny FUNSD model, Debian's Chromium driven through chromedriver (selenium). A real
sample page is uploaded through the page's file input; the picture shown and the JSON shown are
checked against the Predictor run directly and against the uploaded page's own pixels; a corrupt
upload shows its error line. QA and page-classifier models (in-process servers, same browser): the
question field, a file dropped on the drop zone, the answer or the class shown.

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
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aetnet.predict.predictor import Predictor

PAGE = "funsd/dataset/testing_data/images/82092117.png"
QA_PAGE = "docvqa/documents/ffhx0227_1.png"
SEQ_PAGE = "rvl_cdip/images/80035521.tif"
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
    if shutil.which("fc-list") and not subprocess.run(["fc-list"], capture_output=True, text=True).stdout.strip():
        pytest.fail("no font is installed and headless Chromium's renderer crashes without one: "
                    "apt-get install -y fonts-liberation (scripts/setup.sh does it as root)")
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


def wait_for_result(driver, timeout: float = 120) -> None:
    """Wait until the page shows its answer: the JSON and every picture loaded, or an error line (a
    failure that names the error)."""
    from selenium.webdriver.common.by import By

    done = ("const s = document.getElementById('status'); if (s.className === 'error') return true;"
            "const imgs = [...document.querySelectorAll('img.prediction')];"
            "return document.getElementById('json').textContent !== '' && imgs.length > 0"
            " && imgs.every(i => i.complete && i.naturalWidth > 0);")
    wait_until(driver, lambda d: d.execute_script(done), "the picture and the JSON", timeout)
    status = driver.find_element(By.ID, "status")
    if status.get_attribute("class") == "error":
        pytest.fail(f"the web page shows an error: {status.text}")


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
    wait_for_result(browser)
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


class InProcessServer:
    """uvicorn serving an app on a free loopback port in a thread of the test process (bounded start and stop)."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.server.config.port}/"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


DROP = """
const [name, b64] = arguments;
const file = new File([Uint8Array.from(atob(b64), c => c.charCodeAt(0))], name, { type: "image/png" });
const data = new DataTransfer(); data.items.add(file);
const drop = document.getElementById("drop");
drop.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true, cancelable: true }));
const highlighted = drop.classList.contains("over");
drop.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
return [highlighted, drop.classList.contains("over")];
"""


def test_web_page_in_headless_chromium_qa_model_question_and_dropped_file(browser, qa_model, shared_data):
    """A QA model: the page shows the question field; the question typed there and a page dropped on
    the drop zone (a drag-and-drop event carrying the file) give the Predictor's answer."""
    from selenium.webdriver.common.by import By

    from aetnet.serve.app import create_app

    doc = shared_data / QA_PAGE
    question = next(q["question"] for q in json.loads((shared_data / "docvqa/val_v1.0_sample.json").read_text())
                    ["data"] if q["image"].endswith(doc.name))
    predictor = Predictor(qa_model)
    want = predictor.predict_file(doc, question)
    assert want[0]["answer"], "the tiny QA model answers on this page (else the status check is weak)"
    with InProcessServer(create_app(predictor)) as url:
        browser.get(url)
        wait_until(browser, lambda d: "qa model (qa)" in d.find_element(By.ID, "model").text, "the model line")
        assert browser.find_element(By.ID, "question-row").is_displayed()
        browser.find_element(By.ID, "question").send_keys(question)
        highlighted = browser.execute_script(DROP, doc.name, base64.b64encode(doc.read_bytes()).decode("ascii"))
        assert highlighted == [True, False]  # the drop zone lights up while a file is dragged over it
        wait_for_result(browser)
        shown = json.loads(browser.find_element(By.ID, "json").text)
        status = browser.find_element(By.ID, "status").text
        size = browser.execute_script(
            "const i = document.querySelector('img.prediction'); return [i.naturalWidth, i.naturalHeight];")
    assert len(shown) == len(want) == 1 and "image" not in shown[0] and shown[0]["file"] == doc.name
    got, exp = shown[0], want[0]
    assert got["kind"] == "qa" and got["question"] == exp["question"] == question
    assert [w["text"] for w in got["words"]] == [w["text"] for w in exp["words"]]
    assert got["answer"]["words"] == exp["answer"]["words"] and got["answer"]["text"] == exp["answer"]["text"]
    assert abs(got["answer"]["score"] - exp["answer"]["score"]) <= 1e-5
    assert size == exp["size"]
    assert status == f"{doc.name}: 1 page(s); page 1: {exp['answer']['text']}"


def test_web_page_in_headless_chromium_sequence_model_shows_the_class(browser, seq_model, shared_data):
    """A page classifier: a TIFF scan uploaded through the file input; the picture (the page drawn as a
    PNG, so the browser shows a TIFF upload too), the class in the JSON and the status line."""
    from selenium.webdriver.common.by import By

    from aetnet.serve.app import create_app

    tiff = shared_data / SEQ_PAGE
    predictor = Predictor(seq_model)
    want = predictor.predict_file(tiff)
    with InProcessServer(create_app(predictor)) as url:
        upload(browser, url, tiff)
        wait_for_result(browser)
        shown = json.loads(browser.find_element(By.ID, "json").text)
        status = browser.find_element(By.ID, "status").text
        size = browser.execute_script(
            "const i = document.querySelector('img.prediction'); return [i.naturalWidth, i.naturalHeight];")
        assert not browser.find_element(By.ID, "question-row").is_displayed()
    assert len(shown) == len(want) == 1 and "image" not in shown[0] and shown[0]["file"] == tiff.name
    got, exp = shown[0], want[0]
    assert got["kind"] == "sequence" and got["label"] == exp["label"] and abs(got["score"] - exp["score"]) <= 1e-5
    assert size == exp["size"] == list(Image.open(tiff).size)
    assert status == f"{tiff.name}: 1 page(s); page 1: {exp['label']}"
