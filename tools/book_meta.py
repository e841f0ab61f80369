"""One place for what the book's pages share: the repository, the Colab ref, the version, the Colab cell.

The ref that Colab opens and installs is ``repository.branch`` of ``_config.yml``: Jupyter Book builds every
page's Colab button from it, and every notebook's first cell installs trustml from the same ref, so the
notebook a reader opens and the package it installs never drift apart. It is the release tag of the book's
version (``v{trustml.__version__}``), which ``python -m tools.release`` checks and creates (CONTRIBUTING.md).
"""

from __future__ import annotations

import pathlib
import re
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The book's parts; each notebook installs the extra of its part (``trustml[privacy]``, ...).
PARTS = ("privacy", "federated", "fairness")
#: Where a reader who cannot install in Colab is sent (the site's "Run it yourself" page).
HELP_PAGE = "book/run-it-yourself"


def _repository_setting(key: str, text: str | None = None) -> str:
    text = (ROOT / "_config.yml").read_text() if text is None else text
    block = re.search(r"^repository:\s*\n((?:[ \t]+.*\n?)+)", text, re.MULTILINE)
    match = block and re.search(rf"^\s+{key}:\s*(\S+)", block.group(1), re.MULTILINE)
    if not match:
        raise ValueError(f"_config.yml has no repository.{key}")
    return match.group(1).strip("\"'")


def repository_url() -> str:
    """``repository.url`` of ``_config.yml``."""
    return _repository_setting("url")


def colab_ref(config_text: str | None = None) -> str:
    """``repository.branch`` of ``_config.yml``: the git ref the Colab buttons open and the Colab cells install."""
    return _repository_setting("branch", config_text)


def book_version() -> str:
    """``trustml.__version__``, read without importing the package."""
    match = re.search(r'__version__ = "([^"]+)"', (ROOT / "trustml" / "__init__.py").read_text())
    if not match:
        raise ValueError("trustml/__init__.py has no __version__")
    return match.group(1)


def release_tag(version: str | None = None) -> str:
    return f"v{book_version() if version is None else version}"


def colab_install_target(part: str) -> str:
    """What the Colab cell of a notebook in ``book/<part>/`` installs: that part's extra, at the Colab ref."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    return f"trustml[{part}] @ git+{repository_url()}@{colab_ref()}"


def colab_notebook_url(path: str) -> str:
    """The Colab link of a notebook (``path`` relative to the repository), as the site's Colab button makes it."""
    repo = urllib.parse.urlsplit(repository_url()).path.strip("/")
    return f"https://colab.research.google.com/github/{repo}/blob/{colab_ref()}/{path}"


def site_url() -> str:
    """The published site (GitHub Pages of the repository)."""
    owner, name = urllib.parse.urlsplit(repository_url()).path.strip("/").split("/")[:2]
    return f"https://{owner}.github.io/{name}"


def colab_setup_source(part: str) -> str:
    """The first cell of every notebook (tagged ``remove-cell``): a no-op outside Colab.

    A failed install stops the notebook with one line saying what to do (an exception whose
    ``_render_traceback_`` IPython shows instead of a traceback), not with ModuleNotFoundErrors later.
    """
    return f'''# Colab setup: install trustml ({part}) at this book's version, enable widgets. Nothing elsewhere.
import sys

if "google.colab" in sys.modules:
    import subprocess

    TRUSTML = "{colab_install_target(part)}"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", TRUSTML], capture_output=True, text=True)
    if pip.returncode:
        class InstallFailed(Exception):
            def _render_traceback_(self):
                return [str(self)]

        said = (pip.stderr.strip().splitlines() or ["no message"])[-1]
        raise InstallFailed(f"Could not install {{TRUSTML}} (pip: {{said}}). Check the runtime's internet access "
                            "(Runtime > Disconnect and delete runtime, then Run all) or run the book locally: "
                            "{site_url()}/{HELP_PAGE}.html")
    from google.colab import output

    output.enable_custom_widget_manager()'''


def replace_block(page_text: str, name: str, body: str) -> str:
    """``page_text`` with the text between ``<!-- {name}:begin -->`` and ``<!-- {name}:end -->`` replaced by
    ``body`` (the generated tables of the book's pages live between such markers)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if page_text.count(begin) != 1 or page_text.count(end) != 1:
        raise ValueError(f"the page must contain {begin} and {end} exactly once")
    start, stop = page_text.index(begin) + len(begin), page_text.index(end)
    return page_text[:start] + "\n" + body + "\n" + page_text[stop:]
