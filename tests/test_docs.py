"""The shared parameter documentation (docdict) and its filling into docstrings."""

import importlib
import inspect
import re
from pathlib import Path

import pytest

import sk_braintune
from sk_braintune._docs import docdict, fill_doc


def test_fill_doc_indents_each_entry_like_its_placeholder():
    @fill_doc
    def delayed(X, delays=(1, 2, 3, 4)):
        """Delay.

        Parameters
        ----------
        X : ndarray
        %(delays)s
            Only whole TRs.
        """

    entry = docdict["delays"].strip("\n").splitlines()
    lines = delayed.__doc__.splitlines()
    start = lines.index("        " + entry[0])
    assert lines[start:start + len(entry)] == ["        " + line for line in entry]
    assert lines[start + len(entry)] == "            Only whole TRs."  # continues the text
    assert "%(" not in delayed.__doc__


def test_fill_doc_names_a_missing_entry():
    def documented():
        """Nothing.

        Parameters
        ----------
        %(no_such_entry)s
        """

    with pytest.raises(KeyError, match="documented.*no_such_entry"):
        fill_doc(documented)
    assert fill_doc(lambda: None).__doc__ is None  # no docstring: left alone


def _package_sources():
    root = Path(sk_braintune.__file__).parent
    return {path: path.read_text() for path in root.rglob("*.py")}


def test_every_docdict_entry_is_used_and_every_placeholder_filled():
    sources = _package_sources()
    used = set()
    for text in sources.values():
        used.update(re.findall(r"^[ \t]*%\((\w+)\)s[ \t]*$", text, flags=re.MULTILINE))
    assert used <= set(docdict), used - set(docdict)
    assert set(docdict) <= used, f"unused docdict entries: {set(docdict) - used}"
    # every module importing fill_doc leaves no placeholder unfilled in what it defines
    for path, text in sources.items():
        if "%(" not in text or path.name == "_docs.py":
            continue
        parts = path.relative_to(Path(sk_braintune.__file__).parent.parent).with_suffix("").parts
        module = importlib.import_module(".".join(parts))
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            docs = [obj.__doc__ or ""]
            if inspect.isclass(obj):
                docs += [getattr(m, "__doc__", "") or "" for m in vars(obj).values()]
            for doc in docs:
                assert not re.search(r"^\s*%\(\w+\)s\s*$", doc, flags=re.MULTILINE), (
                    f"{module.__name__}.{name} has an unfilled placeholder")


def test_filled_docstrings_document_the_signature():
    from numpydoc.docscrape import NumpyDocString

    from sk_braintune.analysis.probe import pooled_layer_features
    from sk_braintune.encoding import FIRDelayer
    from sk_braintune.commands.settings import TuneSettings

    for obj in (pooled_layer_features, FIRDelayer.transform, TuneSettings):
        documented = [name for p in NumpyDocString(obj.__doc__)["Parameters"]
                      for name in p.name.split(", ")]
        signature = [p for p in inspect.signature(obj).parameters if p != "self"]
        assert documented == signature, obj
