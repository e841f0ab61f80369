"""The published site, as a reader sees it: links resolve, Colab links open files that exist, and every
page renders in a real browser (headless Chromium) with no network beyond the site itself: math typeset,
plotly figures and their slider twins working, the live explorers' saved figures shown.

The site is built from the notebooks test_notebooks.py already ran with QUICK=True (tools/site.py).
Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import functools
import http.server
import pathlib
import threading

import pytest
import yaml

from tools.site import ARTIFACTS, ROOT, build_quick_site, check_links, colab_paths

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


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


VISIBLE_DATA = """gd => gd.data.filter(t => t.visible === undefined || t.visible === true)
                                 .map(t => [Array.from(t.x || []), Array.from(t.y || [])])"""


MATH_STATE = r"""() => {
  const math = [...document.querySelectorAll('.math')];
  return {math: math.length, typeset: math.filter(m => m.querySelector('mjx-container')).length,
          errors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length,
          raw: [...document.querySelectorAll('article, .bd-article')].map(a => a.innerText)
                 .join(' ').match(/\\\(|\\\)|\\\[|\\\]|\$\$/g) || []};
}"""


def test_every_page_renders_offline_with_math_plots_and_widgets(site, served, browser):
    """Every page, with every request that leaves the site refused: no traceback, math typeset by the site's
    own MathJax (no raw TeX delimiters, no MathJax error), every plotly figure drawn by the site's own
    plotly.js and its slider twin moving, every live explorer's saved figure shown."""
    shots = ARTIFACTS / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    report, pages_with_math = [], 0
    for page_file in sorted(site.rglob("*.html")):
        name = str(page_file.relative_to(site))
        if name.startswith(("_static", "_sources", "genindex", "search")):
            continue
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        refused: list[str] = []
        page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))

        def offline(request_route, refused=refused):
            url = request_route.request.url
            if url.startswith(served) or url.startswith("data:") or url.startswith("blob:"):
                return request_route.continue_()
            refused.append(url)
            return request_route.abort()

        page.route("**/*", offline)
        page.goto(f"{served}/{name}", wait_until="load")
        text = page.inner_text("body")
        assert "Traceback (most recent call last)" not in text, f"{name}: a traceback is shown"
        assert page.locator(".output.traceback, .output.error").count() == 0, f"{name}: an error output"
        page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise.then(() => 1) : 0")
        math = page.evaluate(MATH_STATE)
        assert math["typeset"] == math["math"], f"{name}: {math['math'] - math['typeset']} formulas not typeset"
        assert math["errors"] == 0, f"{name}: MathJax reports {math['errors']} errors"
        assert not math["raw"], f"{name}: raw TeX delimiters left in the text: {math['raw'][:5]}"
        pages_with_math += math["math"] > 0
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
        if page.locator('script[type="application/vnd.jupyter.widget-state+json"]').count():
            page.wait_for_selector(".trustml-live-explorer img", timeout=20000)
        page.screenshot(path=str(shots / (name.replace("/", "__").replace(".html", ".png"))), full_page=True)
        assert not errors, f"{name}: JavaScript errors {errors}"
        assert not refused, f"{name}: the page needs the network for {sorted(set(refused))[:5]}"
        report.append(f"{name}: {math['math']} formulas, {expected_plots} plotly figures, {moved} sliders moved")
        page.close()
    (ARTIFACTS / "browser-report.txt").write_text("\n".join(report) + "\n")
    assert any("sliders moved" in line and not line.endswith(" 0 sliders moved") for line in report)
    assert pages_with_math >= 5, "the book's maths is on many pages"
