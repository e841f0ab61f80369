"""The site's own copies of MathJax, RequireJS, the widgets' HTML manager and plotly.js (book/_ext/offline_assets.py);
tests/test_site.py checks the built pages in a browser with the network blocked."""

from __future__ import annotations

import pathlib
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import offline_assets  # noqa: E402


def page_context(body: str) -> dict:
    return {"body": body, "pathto": lambda name, resource=0: f"../../{name}"}


def test_plotly_outputs_load_the_sites_own_plotly_js():
    offline_assets._served["plotly.js"] = "2.35.2"
    body = "requirejs.config({paths: {'plotly': ['https://cdn.plot.ly/plotly-2.35.2.min']}});"
    context = page_context(body)
    offline_assets.local_plotly(None, "book/x", "page.html", context, None)
    assert "cdn.plot.ly" not in context["body"]
    assert "'../../_static/offline/plotly/plotly.min'" in context["body"]


def test_a_plotly_version_the_site_does_not_serve_is_a_warning(monkeypatch):
    offline_assets._served["plotly.js"] = "2.35.2"
    warnings: list[str] = []
    monkeypatch.setattr(offline_assets, "_warn", warnings.append)
    context = page_context("paths: {'plotly': ['https://cdn.plot.ly/plotly-3.0.1.min']}")
    offline_assets.local_plotly(None, "book/x", "page.html", context, None)
    assert any("3.0.1" in w and "2.35.2" in w for w in warnings), warnings


def test_the_config_points_every_script_at_the_site(tmp_path, monkeypatch):
    monkeypatch.setattr(offline_assets, "vendor_folder", lambda: tmp_path)
    plotly_dir = tmp_path / offline_assets.VENDOR / "plotly"
    plotly_dir.mkdir(parents=True)
    (plotly_dir / "plotly.min.js").write_text("/** plotly.js v2.35.2 */")
    config = types.SimpleNamespace(html_static_path=["_static"], html_js_files=["https://cdn/require.min.js"],
                                   mathjax_path="https://cdn/mathjax", nb_ipywidgets_js={"https://cdn/x": {}})
    offline_assets.use_local_assets(None, config)
    assert config.html_static_path == ["_static", str(tmp_path)]
    assert not config.mathjax_path.startswith("http") and config.mathjax_path.endswith("tex-mml-chtml.js")
    assert all(not str(f).startswith("http") for f in config.html_js_files)
    assert list(config.nb_ipywidgets_js) == [offline_assets.HTML_MANAGER_PATH]
    assert offline_assets._served["plotly.js"] == "2.35.2"


@pytest.mark.skipif(not (offline_assets.cache_dir() / "static").exists(), reason="the site has not been built here")
def test_the_vendored_files_carry_their_licences():
    vendor = offline_assets.cache_dir() / "static" / offline_assets.VENDOR
    for name in ("mathjax", "html-manager"):
        assert (vendor / name / "LICENSE").is_file(), name
    assert "MIT" in (vendor / "requirejs" / "require.js").read_text()[:1000]
    assert (vendor / "README.txt").read_text().count("licence") == 4
