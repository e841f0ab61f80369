"""One place for what the book's pages share: repository URL (from _config.yml) and version (trustml)."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def repository_url() -> str:
    """``repository.url`` of ``_config.yml``."""
    match = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", (ROOT / "_config.yml").read_text(), re.MULTILINE)
    if not match:
        raise ValueError("_config.yml has no repository.url")
    return match.group(1)


def book_version() -> str:
    """``trustml.__version__``, read without importing the package."""
    return re.search(r'__version__ = "([^"]+)"', (ROOT / "trustml" / "__init__.py").read_text()).group(1)


def colab_install_target() -> str:
    return f"trustml[encoder] @ git+{repository_url()}@v{book_version()}"


def colab_setup_source() -> str:
    """The first cell of every notebook (tagged ``remove-cell``): a no-op outside Colab."""
    return f'''# Colab setup: install trustml at this book's version and enable widgets. Does nothing elsewhere.
import sys

if "google.colab" in sys.modules:
    %pip install -q "{colab_install_target()}"
    from google.colab import output

    output.enable_custom_widget_manager()'''
