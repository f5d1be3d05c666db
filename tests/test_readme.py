"""The README's first Python example runs as printed, offline, in a fresh cache."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
# a Hugging Face hub id such as "facebook/wav2vec2-base" cannot load offline
HUB_MODEL = re.compile(r"""["'][A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+["']""")


def first_python_block(text):
    match = re.search(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    if match is None:
        raise AssertionError("README.md has no ```python block")
    return match.group(1)


def test_first_python_block_is_found():
    block = first_python_block("intro\n```bash\nls\n```\n```python\nx = 1\n```\n```python\ny\n```")
    assert block == "x = 1\n"


@pytest.mark.filterwarnings("ignore")
def test_readme_example_runs_offline(tmp_path):
    pytest.importorskip("espeakng_loader")
    block = first_python_block(README.read_text(encoding="utf-8"))
    hub_ids = HUB_MODEL.findall(block)
    if hub_ids:
        pytest.fail(f"the README example names hub models {hub_ids}, which need network "
                    "access; the offline example must come first")
    script = tmp_path / "readme_example.py"
    script.write_text(block, encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               SK_BRAINTUNE_CACHE=str(tmp_path / "cache"), MPLBACKEND="Agg")
    # the package under test, not an installed copy elsewhere
    root = str(README.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"README example failed:\n{done.stderr[-3000:]}"
    printed = re.search(r"mean r on the held-out story: (-?[0-9.]+)", done.stdout)
    assert printed is not None, done.stdout[-2000:]
    assert -1.0 <= float(printed.group(1)) <= 1.0
