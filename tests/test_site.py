"""The course's website (`make book`) in a real browser: build/site/ served on localhost and
opened page by page in headless Chromium through Playwright.

`make test` builds the smoke site first (`make book MODE=smoke`). Without a built site the test
is skipped, except under CI, where it fails. Screenshots go to build/site-screenshots/.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest
from chromium import skip_without_browser
from clitools import in_ci

pytestmark = pytest.mark.slow  # left out of the quick lane (make check)

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "build" / "site"
SHOTS = ROOT / "build" / "site-screenshots"
PAGES = [
    "index.html",
    "01_environment.html",
    "02_normalization.html",
    "03_model.html",
    "04_td0.html",
    "05_td_lambda.html",
    "06_video.html",
    "07_experiments.html",
    "exercises.html",
    "INSTRUCTORS.html",
    "glossary.html",
]
MATH_PAGES = ["02_normalization.html", "03_model.html", "04_td0.html", "05_td_lambda.html"]
MATH_PAGES += ["glossary.html"]
TIMEOUT = 30_000  # ms for a page or its maths

skip_without_browser()
if not (SITE / "index.html").exists():
    message = f"no site in {SITE}: build it with `make book MODE=smoke`"
    if in_ci():
        raise RuntimeError(message)
    pytest.skip(message, allow_module_level=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # (no line per request in the test's output)
        pass


@pytest.fixture(scope="module")
def site():
    """build/site/ served on a free localhost port; yields its address."""
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def visits(browser, site):
    """Every page opened once; what each showed, and every address the browser asked for."""
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    seen = {}
    for name in PAGES:
        response = page.goto(f"{site}/{name}", wait_until="load", timeout=TIMEOUT)
        assert response is not None and response.ok, f"{name}: HTTP {response and response.status}"
        if name in MATH_PAGES:  # MathJax typesets after the page loads
            page.wait_for_selector("mjx-container", timeout=TIMEOUT)
            page.evaluate("MathJax.startup.promise")
        seen[name] = {
            "links": page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)"),
            "broken_images": page.eval_on_selector_all(
                "img", "els => els.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
            ),
            "math": page.locator("mjx-container").count(),
            "text": page.locator("article").inner_text(),
            "code_text": "\n".join(page.locator("article pre, article code").all_inner_texts()),
            "ids": set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)")),
        }
        if name in ("index.html", "05_td_lambda.html"):
            page.screenshot(path=SHOTS / name.replace(".html", ".png"), full_page=False)
    yield {"pages": seen, "requests": requests, "page": page, "site": site}
    context.close()


def test_every_page_opens_with_its_images(visits):
    for name, seen in visits["pages"].items():
        assert not seen["broken_images"], f"{name}: images missing: {seen['broken_images']}"


def test_no_broken_internal_link(visits):
    site, pages = visits["site"], visits["pages"]
    page = visits["page"]
    for name, seen in pages.items():
        for link in seen["links"]:
            if not link.startswith(site):
                continue
            address, fragment = urldefrag(link)
            target = urlparse(address).path.lstrip("/") or "index.html"
            assert (SITE / target).exists(), f"{name} links to a missing {target}"
            if fragment and target in pages:
                assert fragment in pages[target]["ids"], f"{name} links to {target}#{fragment}"
    response = page.request.get(f"{site}/no-such-page.html")  # the check can fail
    assert response.status == 404


def test_maths_is_typeset(visits):
    for name in MATH_PAGES:
        seen = visits["pages"][name]
        assert seen["math"] > 0, f"{name}: no typeset formula"
        prose = seen["text"]
        for code in seen["code_text"].splitlines():
            prose = prose.replace(code, "")
        raw = re.findall(r"\$[^$\n]{1,80}\$", prose)
        assert not raw, f"{name}: maths left as text: {raw[:3]}"


def test_notebook_pages_show_outputs_and_a_download(visits):
    for name in PAGES[1:7]:
        text = visits["pages"][name]["text"]
        assert "Download this notebook" in text, name
        # A Markdown table a cell printed is drawn as a table, not left as its | ... | source.
        assert not re.search(r"\|\s*[-—–:]{1,3}\s*\|", text), f"{name}: a table left as text"
    assert "mode" in visits["pages"]["index.html"]["text"]  # which run the site shows


def test_a_video_plays(visits):
    page = visits["page"]
    page.goto(f"{visits['site']}/06_video.html", wait_until="load", timeout=TIMEOUT)
    videos = page.locator("video")
    assert videos.count() >= 1
    page.wait_for_function(
        "() => [...document.querySelectorAll('video')].some(v => v.duration > 0)",
        timeout=TIMEOUT,
    )
    duration = page.evaluate(
        "Math.max(...[...document.querySelectorAll('video')].map(v => v.duration || 0))"
    )
    assert duration > 0.5  # seconds of a filmed episode


def test_search_finds_epsilon(visits):
    page = visits["page"]
    page.goto(f"{visits['site']}/search.html?q=epsilon", wait_until="load", timeout=TIMEOUT)
    results = page.locator("#search-results ul.search li")
    results.first.wait_for(timeout=TIMEOUT)
    found = " ".join(results.all_inner_texts())
    assert results.count() >= 1 and "epsilon" in found.lower()


def test_nothing_asked_off_localhost(visits):
    site = visits["site"]
    elsewhere = [url for url in visits["requests"] if not url.startswith((site, "data:", "blob:"))]
    assert visits["requests"], "the browser asked for nothing: the check would pass vacuously"
    assert not elsewhere, f"requests off localhost: {elsewhere[:5]}"
