"""Sphinx configuration of the scdmac documentation (build: ``make docs``)."""

from __future__ import annotations

from importlib.metadata import version as _version

project = "scdmac"
author = "scdmac developers"
copyright = "2026, scdmac developers"
release = _version("scdmac")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
# .rst first: autosummary writes its stubs (reStructuredText) with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "jupyter_execute"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3
# tutorials are stored executed (their outputs are the point); the docs build never runs them
nb_execution_mode = "off"

templates_path = ["_templates"]
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# members we define, including those of our own base classes (DeepClusteringModel, StagePlan, the module
# mixins); methods inherited from scvi-tools, torch or Lightning are left to their own documentation
autodoc_default_options = {"members": True, "inherited-members": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# numpydoc "Parameters" entries name types in the signature; unresolved type names are not errors
nitpicky = False
# no intersphinx: an unreachable inventory is a warning that no setting silences, and -W must pass offline
# notebooks and included Markdown written elsewhere may skip a heading level (e.g. # then ###)
suppress_warnings = ["myst.header"]

html_theme = "sphinx_book_theme"
html_title = "scdmac"
html_theme_options = {"show_toc_level": 2}


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Leave out methods and properties that a class inherits from another package."""
    if what not in ("class", "exception"):
        return None
    func = obj.fget if isinstance(obj, property) else getattr(obj, "__func__", obj)
    module = getattr(func, "__module__", None) if callable(func) else None
    if isinstance(module, str) and not module.startswith("scdmac"):
        return True
    return None


def _check_api_complete(app):
    """Warn (an error under -W) when a name in a subpackage's ``__all__`` is missing from api.md."""
    import importlib
    import re
    from pathlib import Path

    from sphinx.util import logging

    listed = set(re.findall(r"^ {3}(\w+\.\w+)\s*$", (Path(app.srcdir) / "api.md").read_text(), flags=re.M))
    scdmac = importlib.import_module("scdmac")
    missing = [
        f"{sub}.{name}"
        for sub in scdmac.__all__
        if not sub.startswith("_")
        for name in getattr(importlib.import_module(f"scdmac.{sub}"), "__all__", [])
        if f"{sub}.{name}" not in listed
    ]
    if missing:
        logging.getLogger(__name__).warning("api.md does not list public names: %s", ", ".join(missing))


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
    app.connect("builder-inited", _check_api_complete)
