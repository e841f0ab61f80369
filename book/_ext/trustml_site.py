"""Small Sphinx fixes for the book's site (loaded through _config.yml's sphinx.local_extensions).

Offline: MathJax, RequireJS, the ipywidgets HTML manager and plotly.js are served by the site itself
(``offline_assets``, beside this file).

sphinx-thebe registers its inline configuration script during ``env-before-read-docs``, after the HTML
builder has been created; with Sphinx 7 that script then appears twice on every page (once with file
name ``None``, once with ``""``), and browsers reject the second ``const THEBE_JS_URL`` with a
SyntaxError. We drop scripts that repeat an earlier one's file and attributes.
"""


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", None) or "", tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    import offline_assets  # beside this file; local_extensions puts this folder on sys.path

    offline_assets.setup(app)
    app.connect("html-page-context", _drop_duplicate_scripts, priority=1000)  # after the themes
    return {"parallel_read_safe": True, "parallel_write_safe": True}
