"""Serve the site's scripts from the site itself, so it works offline (a workshop room, a zip handed out).

At build time (``config-inited``) this fetches, once, the npm registry's packages of MathJax 3, RequireJS and
the ipywidgets HTML manager (``npm pack``, cached under ``$TRUSTML_CACHE/site-assets`` or
``~/.cache/trustml/site-assets``), takes plotly.js from the plotly Python package that made the figures
(``plotly/package_data/plotly.min.js``, the exact version the outputs ask for), and copies them with their
licences into ``_static/offline/``. Then:

- ``mathjax_path`` points at the local MathJax (Sphinx's default is a CDN);
- myst-nb's ``nb_ipywidgets_js`` loads the local RequireJS and HTML manager (its default is two CDNs);
- RequireJS is on every page (plotly's "notebook_connected" outputs call ``require``), and the CDN path of
  plotly.js written into those outputs (``https://cdn.plot.ly/plotly-X.min``) is replaced by the local copy;
- ``mathjax2_shim.js`` (beside this file) lets the HTML manager, which typesets with MathJax 2's API, work
  with MathJax 3.

tests/test_site.py opens every page with all other network blocked and checks that math renders and every
plotly figure draws.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import tarfile

NPM_PACKAGES = {  # name: (version, files to keep, relative to the package folder)
    "mathjax": ("3.2.2", ["LICENSE", "package.json", "es5/tex-mml-chtml.js", "es5/input", "es5/output",
                          "es5/a11y", "es5/ui", "es5/sre", "es5/adaptors"]),
    "requirejs": ("2.3.7", ["package.json", "require.js"]),  # MIT: package.json and the header of require.js
    "@jupyter-widgets/html-manager": ("1.0.6", ["LICENSE", "package.json", "dist"]),
}
VENDOR = "offline"  # under _static (the theme has a "vendor" folder of its own)
MATHJAX_PATH = f"{VENDOR}/mathjax/es5/tex-mml-chtml.js"
REQUIRE_PATH = f"{VENDOR}/requirejs/require.js"
HTML_MANAGER_PATH = f"{VENDOR}/html-manager/dist/embed-amd.js"
MATHJAX2_SHIM_PATH = f"{VENDOR}/mathjax2_shim.js"  # our own: book/_ext/mathjax2_shim.js
PLOTLY_CDN = re.compile(r"https://cdn\.plot\.ly/plotly-([0-9][^'\"]*?)\.min")
_served = {"plotly.js": "unknown"}  # the version of plotly.js the site serves


def cache_dir() -> pathlib.Path:
    base = os.environ.get("TRUSTML_CACHE") or pathlib.Path.home() / ".cache" / "trustml"
    return pathlib.Path(base) / "site-assets"


def _local_name(package: str) -> str:
    return package.split("/")[-1]


def fetch_npm(package: str, version: str, keep: list[str], into: pathlib.Path) -> pathlib.Path:
    """``npm pack`` of ``package@version``, unpacked (only ``keep``) into ``into/<name>``; cached."""
    target = into / _local_name(package)
    stamp = target / ".version"
    if stamp.exists() and stamp.read_text() == version:
        return target
    shutil.rmtree(target, ignore_errors=True)
    downloads = cache_dir() / "tarballs"
    downloads.mkdir(parents=True, exist_ok=True)
    packed = subprocess.run(["npm", "pack", f"{package}@{version}", "--pack-destination", str(downloads)],
                            capture_output=True, text=True)
    if packed.returncode:
        raise RuntimeError(f"npm pack {package}@{version} failed (the site serves it itself): {packed.stderr}")
    tarball = downloads / packed.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and not m.name.endswith(".map") and any(
            m.name == f"package/{k}" or m.name.startswith(f"package/{k}/") for k in keep)]
        for member in members:
            member.name = member.name.removeprefix("package/")
        archive.extractall(target, members=members, filter="data")
    stamp.write_text(version)
    return target


def vendor_folder() -> pathlib.Path:
    """The folder whose ``offline/`` goes into ``_static``: npm packages and plotly.js with their licences."""
    import plotly

    root = cache_dir() / "static"
    vendor = root / VENDOR
    for stale in root.glob("*") if root.exists() else []:  # the whole folder goes into _static: only ours
        if stale.name != VENDOR:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    for package, (version, keep) in NPM_PACKAGES.items():
        fetch_npm(package, version, keep, vendor)
    shutil.copyfile(pathlib.Path(__file__).with_name("mathjax2_shim.js"), vendor / "mathjax2_shim.js")
    plotly_dir = vendor / "plotly"
    plotly_dir.mkdir(parents=True, exist_ok=True)
    package_data = pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    shutil.copyfile(package_data, plotly_dir / "plotly.min.js")
    licence = next(iter(pathlib.Path(plotly.__file__).parent.parent.glob(f"plotly-{plotly.__version__}.dist-info/"
                                                                           "**/LICENSE*")), None)
    if licence:
        shutil.copyfile(licence, plotly_dir / "LICENSE.txt")
    (vendor / "README.txt").write_text(
        "Copies served by this site so that it works offline.\n"
        + "".join(f"{p}@{v} from the npm registry: {_local_name(p)}/ ({licence_of(vendor / _local_name(p))})\n"
                  for p, (v, _) in NPM_PACKAGES.items())
        + f"plotly.js {plotly_js_version(plotly_dir / 'plotly.min.js')} from the plotly Python package "
          f"{plotly.__version__}: plotly/ (licence MIT: plotly/LICENSE.txt)\n")
    return root


def licence_of(package: pathlib.Path) -> str:
    """Where a package's licence is: its LICENSE file, else the ``license`` field of its package.json."""
    import json

    declared = json.loads((package / "package.json").read_text()).get("license", "see package.json")
    if (package / "LICENSE").exists():
        return f"licence {declared}: {package.name}/LICENSE"
    return f"licence {declared}: {package.name}/package.json and the files' headers"


def _warn(message: str) -> None:
    from sphinx.util import logging

    logging.getLogger(__name__).warning(message)


def plotly_js_version(path: pathlib.Path) -> str:
    match = re.search(r"plotly\.js v([0-9][^\s*]*)", path.read_text(errors="replace")[:500])
    return match.group(1) if match else "unknown"


def use_local_assets(app, config) -> None:
    root = vendor_folder()
    config.html_static_path = [*config.html_static_path, str(root)]
    config.mathjax_path = MATHJAX_PATH
    # RequireJS on every page, after the theme's UMD scripts (clipboard.js would otherwise register as an
    # anonymous AMD module and fail) and before the pages' own scripts (the HTML manager is an AMD module).
    # The shim first: it must see the page's MathJax configuration being assigned (book/_ext/mathjax2_shim.js).
    config.html_js_files = [f for f in config.html_js_files if "require" not in str(f)] + [
        (MATHJAX2_SHIM_PATH, {"priority": 500}), (REQUIRE_PATH, {"priority": 500})]
    config.nb_ipywidgets_js = {HTML_MANAGER_PATH: {}}
    _served["plotly.js"] = plotly_js_version(root / VENDOR / "plotly" / "plotly.min.js")


def local_plotly(app, pagename, templatename, context, doctree) -> None:
    """Point plotly's require path at the site's own plotly.js (the outputs name the CDN)."""
    body = context.get("body", "")
    if "cdn.plot.ly" not in body:
        return
    wanted = set(PLOTLY_CDN.findall(body))
    have = _served["plotly.js"]
    if wanted - {have}:
        _warn(f"{pagename}: outputs ask for plotly.js {sorted(wanted)}, the site serves {have} "
              "(re-run the notebooks with the plotly that builds the site)")
    local = context["pathto"](f"_static/{VENDOR}/plotly/plotly.min", 1)
    context["body"] = PLOTLY_CDN.sub(local, body)


def setup(app) -> None:
    app.connect("config-inited", use_local_assets)
    app.connect("html-page-context", local_plotly)
