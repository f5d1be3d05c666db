"""Sphinx configuration for sk_braintune (builds offline: no intersphinx)."""

import os
import sys
import warnings

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import sk_braintune  # noqa: E402

project = "sk_braintune"
author = "sk_braintune developers"
copyright = "2026, sk_braintune developers"
release = sk_braintune.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
# numpydoc validation of every documented docstring (warnings, so errors under -W):
# parameters documented and in order, returns documented, no object without a docstring,
# well-formed summaries and parameter lines. Left out, with the reason:
# - SS05 (summary starts with a third-person verb): flags noun-phrase summaries such as
#   "Sizes and hyperparameters of ..." or "Names of the columns" that read as intended;
# - PR07/RT03 (every parameter/return needs a description): self-explanatory entries such as
#   ``batch_size : int`` or ``self : BrainTuner`` are kept without one;
# - SA01/EX01/ES01 (See Also, Examples, Extended Summary): not required on every object.
numpydoc_validation_checks = {
    "GL02", "GL03", "GL08",  # blank lines around the docstring; a docstring exists
    "SS01", "SS03",  # a summary, ending with a period
    "PR01", "PR02", "PR03",  # every parameter documented, no unknown ones, in order
    "PR05", "PR06", "PR09", "PR10",  # parameter types and descriptions well formed
    "RT01",  # a Returns section where something is returned
    "YD01",  # a Yields section for generators
}
numpydoc_validation_exclude = {
    r"\.extra_repr$",  # torch's repr hook (nn.Module API)
    # dataclasses documented by their Attributes (the fields), not as constructor Parameters
    r"\.Utterance$",
    r"\.BackboneOutput$",
    # callback hooks that override Callback's: the base class documents their parameters
    r"\.callbacks\.(Checkpoint|EarlyStopping|ProgressBar)\.on_[a-z_]+$",
}

templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5", "auto_examples/*.json"]
html_theme = "pydata_sphinx_theme"
html_theme_options = {"navigation_with_keys": False}

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_(?!lebel2023)",
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "reset_modules": ("matplotlib",),
    "write_computation_times": False,
}

# torch/transformers chatter that is not about our docs
warnings.filterwarnings("ignore", category=UserWarning, message=".*Matplotlib is currently using agg.*")
warnings.filterwarnings("ignore", category=FutureWarning)
