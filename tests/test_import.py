"""The bare import must stay cheap: no torch, transformers, scikit-learn or SciPy.

(Its wall time, < 1 s, follows from that; it is not asserted here because timings under a loaded
test run are noise.)"""

import subprocess
import sys


def test_import_is_lazy():
    code = (
        "import sys; import sk_braintune; "
        "heavy = [m for m in ('torch', 'transformers', 'sklearn', 'scipy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy = out.stdout.strip()
    assert heavy == "", f"import sk_braintune loaded {heavy}"


def test_lazy_exports_resolve():
    import sk_braintune

    for name in sk_braintune.__all__:
        assert getattr(sk_braintune, name) is not None
    assert "RidgeEncoder" in dir(sk_braintune)


def test_unknown_attribute():
    import pytest

    import sk_braintune

    with pytest.raises(AttributeError, match="no attribute"):
        sk_braintune.NotAThing  # noqa: B018
