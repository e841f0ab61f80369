"""The published site, as a reader sees it: links resolve, Colab links open files that exist, and every
chapter page renders in a real browser (headless Chromium) with working plotly slider twins.

The site is built from the notebooks test_notebooks.py already ran with QUICK=True (tools/site.py).
Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import functools
import http.server
import os
import pathlib
import shutil
import subprocess
import tarfile
import threading

import pytest
import yaml

from tools.site import ARTIFACTS, ROOT, build_quick_site, check_links, colab_paths

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                  "--no-first-run", "--disable-component-update", "--disable-sync"]


pytestmark = pytest.mark.timeout(1800)  # alone, the site fixture first runs every notebook (QUICK)


@pytest.fixture(scope="module")
def site() -> pathlib.Path:
    return build_quick_site()


def chapter_pages(site: pathlib.Path) -> list[pathlib.Path]:
    return sorted((site / "book").rglob("*.html"))


def test_internal_links_and_anchors_resolve(site):
    broken, external = check_links(site)
    (ARTIFACTS / "external-links.txt").write_text("\n".join(external) + "\n")  # listed, never fetched
    assert not broken, "broken internal links:\n" + "\n".join(broken)
    assert len(chapter_pages(site)) >= 5


def test_colab_links_open_files_of_this_repository(site):
    links = colab_paths(site, CONFIG["repository"]["url"], CONFIG["repository"]["branch"])
    notebook_pages = [p for p in chapter_pages(site) if (ROOT / p.relative_to(site).with_suffix(".ipynb")).exists()]
    assert len(set(links.values())) == len(notebook_pages), "every notebook page needs its Colab button"
    missing = sorted(path for path in links.values() if not (ROOT / path).is_file())
    assert not missing, f"Colab links to files that are not in the repository: {missing}"
    assert not any(path.startswith("./") for path in links.values())


# --- the browser test -------------------------------------------------------------------------------


def chromium_executable() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and pathlib.Path(candidate).exists():
            return candidate
    return None


def cdn_files() -> dict[str, pathlib.Path]:
    """Local copies of the scripts the pages load from CDNs: plotly.js (from the plotly package) and
    require.js (from the npm registry, cached under test-artifacts)."""
    import plotly

    plotly_js = pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    cache = ROOT / ".trustml_cache" / "requirejs"
    require_js = cache / "package" / "require.js"
    if not require_js.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", "requirejs@2.3.7", "--pack-destination", str(cache)], check=True,
                       capture_output=True)
        with tarfile.open(cache / "requirejs-2.3.7.tgz") as archive:
            archive.extract("package/require.js", cache)
    return {"cdn.plot.ly": plotly_js, "require": require_js}


@pytest.fixture(scope="module")
def served(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    executable = chromium_executable()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); the browser test needs it")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


VISIBLE_DATA = """gd => gd.data.filter(t => t.visible === undefined || t.visible === true)
                                 .map(t => [Array.from(t.x || []), Array.from(t.y || [])])"""


def test_every_page_renders_and_every_slider_twin_moves(site, served, browser):
    files = cdn_files()
    shots = ARTIFACTS / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    report = []
    for page_file in chapter_pages(site):
        name = str(page_file.relative_to(site))
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))

        def route(request_route):
            url = request_route.request.url
            if url.startswith(served):
                return request_route.continue_()
            if "cdn.plot.ly" in url:
                return request_route.fulfill(path=str(files["cdn.plot.ly"]), content_type="text/javascript")
            if url.endswith("require.min.js") or url.endswith("require.js"):
                return request_route.fulfill(path=str(files["require"]), content_type="text/javascript")
            return request_route.abort()  # no other network: fonts, MathJax and analytics are not needed

        page.route("**/*", route)
        page.goto(f"{served}/{name}", wait_until="load")
        text = page.inner_text("body")
        assert "Traceback (most recent call last)" not in text, f"{name}: a traceback is shown"
        assert page.locator(".output.traceback, .output.error").count() == 0, f"{name}: an error output"
        expected_plots = page.locator(".cell_output .plotly-graph-div").count()
        if expected_plots:
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot').length >= {expected_plots}", timeout=20000)
        moved = 0
        for plot in page.locator(".js-plotly-plot").all():
            rail = plot.locator(".slider-rail-touch-rect")
            if rail.count() == 0:
                continue
            plot.scroll_into_view_if_needed()
            before = plot.evaluate(VISIBLE_DATA)
            box = rail.first.bounding_box()
            page.mouse.click(box["x"] + box["width"] - 3, box["y"] + box["height"] / 2)
            page.wait_for_timeout(300)
            after = plot.evaluate(VISIBLE_DATA)
            assert after != before, f"{name}: moving a slider did not change the plotted data"
            moved += 1
        page.screenshot(path=str(shots / (name.replace("/", "__").replace(".html", ".png"))), full_page=True)
        assert not errors, f"{name}: JavaScript errors {errors}"
        report.append(f"{name}: {expected_plots} plotly figures, {moved} sliders moved")
        page.close()
    (ARTIFACTS / "browser-report.txt").write_text("\n".join(report) + "\n")
    assert any("sliders moved" in line and not line.endswith(" 0 sliders moved") for line in report)
