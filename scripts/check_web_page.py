"""Check the web page of ``aetnet serve`` in a real headless browser: upload a sample page through the
page's file input, wait for the drawn picture and the JSON, and compare them with the Predictor.

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``) and selenium
(``pip install selenium``); kept out of the test suite because the browser is a 370 MB install.
The page's HTML and its API (``/``, ``/predict?visualize=true``, ``/health``) are tested without a
browser in tests/test_serve.py.

    python scripts/check_web_page.py                          # trains a tiny FUNSD run first
    python scripts/check_web_page.py --model exports/funsd --page form.png

Exit status 0 when the page shows the picture and the JSON equal to the Predictor's record.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

DEFAULT_PAGE = Path("/work/shared/data/funsd/dataset/testing_data/images/82092117.png")
TINY_BUDGET = ["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2",
               "data.max_eval_documents=1"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder; default: train a tiny FUNSD run (--base tiny)")
    p.add_argument("--page", default=str(DEFAULT_PAGE), help="the document to upload")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver", help="path of chromedriver")
    p.add_argument("--screenshot", help="save a screenshot of the page with the result here")
    return p.parse_args()


def start_server(app) -> tuple[str, object]:
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/", server


def browse(url: str, page: Path, chromedriver: str, screenshot: str | None) -> tuple[list[dict], list[int]]:
    """Upload ``page`` through the web page; returns the JSON shown and the picture's natural size."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.get(url)
        WebDriverWait(driver, 30).until(lambda d: "model (" in d.find_element(By.ID, "model").text)
        chooser = driver.find_element(By.ID, "file")
        driver.execute_script("arguments[0].hidden = false;", chooser)  # as a click on the drop zone would
        chooser.send_keys(str(page.resolve()))
        picture = WebDriverWait(driver, 120).until(ec.presence_of_element_located((By.CSS_SELECTOR, "img.prediction")))
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "const i = document.querySelector('img.prediction'); return i.complete && i.naturalWidth > 0;"))
        shown = json.loads(driver.find_element(By.ID, "json").text)
        size = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight];", picture)
        print(f"page status line: {driver.find_element(By.ID, 'status').text}")
        if screenshot:
            driver.save_screenshot(screenshot)
        return shown, size
    finally:
        driver.quit()


def main() -> int:
    args = parse_args()
    from aetnet.predict import Predictor
    from aetnet.serve_app import create_app

    model = args.model
    if model is None:
        from aetnet.train.runner import finetune

        model = str(finetune("funsd", base="tiny", demo=True, output=Path(tempfile.mkdtemp()) / "run",
                             overrides=TINY_BUDGET) / "model")
    predictor = Predictor(model)
    page = Path(args.page)
    want = predictor.predict_file(page)
    url, server = start_server(create_app(predictor))
    try:
        shown, size = browse(url, page, args.chromedriver, args.screenshot)
    finally:
        server.should_exit = True
    problems = []
    if len(shown) != len(want):
        problems.append(f"{len(shown)} pages shown, {len(want)} predicted")
    for got, exp in zip(shown, want):
        if "image" in got:
            problems.append("the JSON view should leave the image field out")
        if [w.get("label") for w in got["words"]] != [w.get("label") for w in exp["words"]]:
            problems.append(f"page {exp['page']}: labels shown differ from the Predictor's")
        if got.get("label") != exp.get("label") or got.get("answer") != exp.get("answer"):
            problems.append(f"page {exp['page']}: class or answer shown differs")
    if size != want[0]["size"]:
        problems.append(f"picture is {size}, the page is {want[0]['size']}")
    if problems:
        print("web page check FAILED: " + "; ".join(problems))
        return 1
    print(f"web page check passed: {page.name} uploaded in headless Chromium, picture {size[0]}x{size[1]} "
          f"and JSON of {len(shown)} page(s) with {len(shown[0]['words'])} words equal to the Predictor's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
