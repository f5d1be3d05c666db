"""Test configuration: one BLAS/torch thread per worker, offline hub, non-interactive figures."""

import os

# Oversubscription (2 workers x N threads on 2 cores) made tiny-model steps ~50x slower here.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    try:
        import torch
    except ImportError:
        yield
        return
    torch.set_num_threads(1)
    yield
