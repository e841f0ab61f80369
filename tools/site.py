"""The tests' view of the book: run notebooks QUICK once, build a site from those runs, check its links.

The test command cannot afford the full-size build, so it builds the same site from the notebooks it has
already executed with ``QUICK=True`` (``execute_notebooks: off``): same pages, same widgets and plotly
twins, smaller experiments. The browser and link tests in ``tests/test_site.py`` run against that site.
"""

from __future__ import annotations

import html.parser
import json
import pathlib
import re
import shutil
import subprocess
import sys
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
EXECUTED = ARTIFACTS / "executed"


def notebooks() -> list[pathlib.Path]:
    return sorted(p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def execute_quick(path: pathlib.Path) -> pathlib.Path:
    """Run ``path`` with stock papermill and ``QUICK=True``; the executed copy lands under test-artifacts/executed."""
    import papermill

    target = EXECUTED / path.relative_to(ROOT)
    target.parent.mkdir(parents=True, exist_ok=True)
    # execution_timeout turns a hung kernel into a failure instead of a silent wait.
    papermill.execute_notebook(str(path), str(target), parameters={"QUICK": True}, kernel_name="python3",
                               cwd=str(path.parent), progress_bar=False, execution_timeout=600)
    return target


def completed(executed: pathlib.Path) -> bool:
    """Whether ``executed`` is a papermill run of the current notebook that finished without an error."""
    if not executed.exists():
        return False
    source = ROOT / executed.relative_to(EXECUTED)
    if executed.stat().st_mtime < source.stat().st_mtime:
        return False
    cells = [c for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code"]
    return all(c.get("execution_count") is not None for c in cells) and not any(
        o.get("output_type") == "error" for c in cells for o in c.get("outputs", []))


def build_quick_site(out: pathlib.Path = ARTIFACTS / "site") -> pathlib.Path:
    """Build the book from QUICK-executed notebooks (running any not executed yet); returns the html folder."""
    source = out / "src"
    shutil.rmtree(out, ignore_errors=True)
    source.mkdir(parents=True)
    config = (ROOT / "_config.yml").read_text()
    config, count = re.subn(r"(?m)^(\s*execute_notebooks:\s*)\S+", r"\1off", config)
    assert count == 1, "_config.yml must set execute.execute_notebooks"
    (source / "_config.yml").write_text(config)
    shutil.copy(ROOT / "_toc.yml", source / "_toc.yml")
    shutil.copytree(ROOT / "book" / "_ext", source / "book" / "_ext")
    for page in (ROOT / "book").rglob("*.md"):
        (source / page.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, source / page.relative_to(ROOT))
    for notebook in notebooks():
        executed = EXECUTED / notebook.relative_to(ROOT)
        if not completed(executed):
            execute_quick(notebook)
        (source / notebook.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(executed, source / notebook.relative_to(ROOT))
    jupyter_book = pathlib.Path(sys.executable).parent / "jupyter-book"
    build = subprocess.run([str(jupyter_book), "build", "--all", "-W", "-n", "--keep-going", str(source)],
                           capture_output=True, text=True)
    if build.returncode:
        raise RuntimeError(f"the QUICK site build failed:\n{build.stdout[-5000:]}\n{build.stderr[-5000:]}")
    return source / "_build" / "html"


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(attributes["id"])
        if tag == "a" and attributes.get("name"):
            self.ids.add(attributes["name"])
        if tag == "a" and attributes.get("href"):
            self.hrefs.append(attributes["href"])


def parse(page: pathlib.Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(errors="replace"))
    return parser


def check_links(html_dir: pathlib.Path) -> tuple[list[str], list[str]]:
    """Internal links (files and ``#anchors``) that do not resolve, and the external links (not fetched)."""
    pages = {page: parse(page) for page in html_dir.rglob("*.html")}
    broken, external = [], set()
    for page, links in pages.items():
        for href in links.hrefs:
            parts = urllib.parse.urlsplit(href)
            if parts.scheme in ("http", "https", "mailto"):
                external.add(href)
                continue
            if parts.scheme:
                continue
            target = page if not parts.path else (page.parent / urllib.parse.unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(html_dir)} -> {href}"
            if not target.exists():
                broken.append(where)
            elif parts.fragment and target.suffix == ".html":
                ids = (pages.get(target) or parse(target)).ids
                if urllib.parse.unquote(parts.fragment) not in ids:
                    broken.append(where + " (no such anchor)")
    return sorted(broken), sorted(external)


def colab_paths(html_dir: pathlib.Path, repository_url: str, branch: str) -> dict[str, str]:
    """Every Colab link of the site, mapped to the repository path it opens."""
    repo = urllib.parse.urlsplit(repository_url).path.strip("/")
    prefix = f"https://colab.research.google.com/github/{repo}/blob/{branch}/"
    found = {}
    for page in html_dir.rglob("*.html"):
        for href in parse(page).hrefs:
            if href.startswith("https://colab.research.google.com"):
                if not href.startswith(prefix):
                    raise ValueError(f"{page.name}: Colab link {href} does not start with {prefix}")
                found[href] = href[len(prefix):]
    return found
