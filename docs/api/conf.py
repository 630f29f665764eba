"""Sphinx configuration of the horkd API reference (``make api``).

Built offline with warnings as errors and nitpicky references: every horkd name a page or a
signature mentions must resolve to a documented object. Names from other packages (torch, numpy,
PIL, the standard library) cannot resolve without intersphinx, which needs the internet, so
they are ignored by module prefix below and only by prefix: a horkd name is never ignored.
"""

from __future__ import annotations

import re

from horkd import __version__ as release  # autodoc imports the installed package anyway

project = "horkd"
author = "horkd contributors"
copyright = "horkd contributors"  # noqa: A001  (Sphinx's name)

version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build", "README.md"]

# Google-style docstrings; types come from the annotations, not from the docstrings.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False  # torch's nn.Module.forward text is not ours
python_use_unqualified_type_names = True

nitpicky = True  # `make api` passes -n as well
_EXTERNAL = (
    "torch", "numpy", "np", "PIL", "pathlib", "collections", "typing", "types", "dataclasses",
    "os", "difflib", "enum",
    "nn",  # torch.nn as the annotations of module-level names spell it
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({'|'.join(re.escape(m) for m in _EXTERNAL)})(\..+)?"),
]

html_theme = "alabaster"
html_title = f"horkd {release} API reference"
html_static_path: list[str] = []
