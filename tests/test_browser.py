"""The generated site in a real browser: headless Chromium (Debian's `chromium`) over the DevTools pipe.

Every page reachable from the index loads without console errors or failed loads, every image
element has loaded (naturalWidth > 0), and the links go index -> layer -> unit and back. Skipped
only where no Chromium is installed, and never under CI (.ci/run installs it).
"""
from __future__ import annotations

import functools
import http.server
import os
import threading

import pytest
from digits import mnist
from models import zoo_model

from lucent_dsl.explore.browser import Chromium, check_site, find_chromium
from lucent_dsl.explore.site import explore
from lucent_dsl.io.files import load_image


def _chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed, though .ci/run installs it (apt-get install chromium)")
        pytest.skip("no Chromium on PATH (install Debian's package: apt-get install chromium)")
    return path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A LeNet5 site with dataset examples, served by `http.server` on the loopback address."""
    browser = _chromium()
    images, _ = mnist()
    site = tmp_path_factory.mktemp("browse") / "site"
    explore(zoo_model("lenet5_mnist"), "lenet5_mnist", ["conv1", "@output"], site, channels="0:2", images=images[::50],
            steps=8, batch=8, k=4, progress=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with Chromium(browser, timeout=60) as chrome:
            yield chrome, f"http://127.0.0.1:{server.server_port}/", site
    finally:
        server.shutdown()
        server.server_close()


def test_every_page_loads_without_errors_and_every_image_has_loaded(served):
    chrome, root, _ = served
    report = check_site(chrome, root + "index.html")
    pages = {url[len(root):] for url in report}
    assert pages == {"index.html", "l/conv1.html", "l/_output.html", "u/conv1_0000.html", "u/conv1_0001.html",
                     "u/_output_0000.html", "u/_output_0001.html"}
    for url, r in report.items():
        assert r["errors"] == [] and r["broken"] == [], (url, r["errors"], r["broken"])
        assert r["images"] >= 2, url
    assert report[root + "u/conv1_0001.html"]["images"] == 2 + 4 + 2  # vis, neg, diversity set, examples


def test_links_lead_from_the_index_to_a_unit_page_and_back(served):
    chrome, root, _ = served
    assert chrome.open(root + "index.html") == []
    unit = chrome.evaluate("document.querySelector('.cell a').href")
    assert unit == root + "u/conv1_0000.html"
    assert chrome.open(unit) == []
    assert chrome.evaluate("document.querySelector('h1').textContent") == "conv1:0"
    back = chrome.evaluate("[...document.querySelectorAll('nav a')].map(a => a.href)")
    assert back[:2] == [root + "index.html", root + "l/conv1.html"] and root + "u/conv1_0001.html" in back
    chrome.evaluate("document.querySelector('nav a').click()")  # a real click on '<- index'
    chrome.wait_for("Page.loadEventFired")
    assert chrome.evaluate("location.href") == root + "index.html" and chrome.errors() == []
    layer = chrome.evaluate("[...document.querySelectorAll('h2 a')].map(a => a.href)")
    assert layer == [root + "l/conv1.html", root + "l/_output.html"]


def test_a_screenshot_of_a_unit_page_shows_the_page(served, tmp_path):
    chrome, root, _ = served
    chrome.open(root + "u/_output_0001.html")
    chrome.evaluate("Promise.all([...document.images].map(i => (i.loading = 'eager', i.decode().catch(() => 0))))")
    chrome.screenshot(tmp_path / "unit.png")
    shot = load_image(tmp_path / "unit.png")
    assert shot.shape[-2:] == (1200, 1000)
    assert float(shot.std()) > 0.05  # not a blank page: text, pictures, a table
