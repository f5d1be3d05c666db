"""BrainTuner under torchrun: 2 CPU processes (gloo) give one process's weights.

The two workers are started with the environment ``torchrun`` sets (RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so the fit initialises the process group itself, as it
does under ``torchrun --nproc_per_node 2 script.py``.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from sk_braintune.testing.models import make_tiny_model  # noqa: E402
from sk_braintune.tuning import BrainTuner  # noqa: E402

N_WINDOWS, N_SAMPLES = 30, 4_000
# global batch 7 over 2 ranks: shards of 4 and 3 rows, and a last batch of 2 (padding path);
# validation on held-out stories drives early stopping and the kept epoch
CONFIGS = {
    # whole transformer, a loss across the batch's samples (not a per-sample mean)
    "full_correlation": dict(loss="correlation", validation=0.25, patience=1),
    # top block on cached lower layers, per-sample loss, no validation
    "cached_top_block": dict(loss="mse", trainable_layers=1, validation=None),
    # two listeners of the same windows, one head each (rows of a window share one forward)
    "participants": dict(loss="mse", head="per_participant", validation=0.25, patience=None),
}
COMMON = dict(batch_size=7, max_epochs=2, random_state=3, lr_backbone=1e-3, lr_head=1e-2,
              warmup_fraction=0.0, device="cpu", weight_decay=0.1)
# weight_decay: Adam normalises the gradient's scale away, an L2 term in it does not, so a
# gradient off by a factor (e.g. world_size) would show

WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from sk_braintune.tuning import BrainTuner

    model, data_path, out_prefix, configs, common = sys.argv[1:6]
    data = np.load(data_path)
    for name, params in json.loads(configs).items():
        prefix = "multi_" if name == "participants" else ""
        extra = {"participants": data["multi_participants"]} if prefix else {}
        tuner = BrainTuner(model, **json.loads(common), **params).fit(
            data[prefix + "X"], data[prefix + "y"], groups=data[prefix + "groups"], **extra)
        weights = {"best_epoch": tuner.best_epoch_}
        weights.update({"head." + k: v.numpy() for k, v in tuner.head_.state_dict().items()})
        weights.update({"backbone." + k: v.detach().numpy()
                        for k, v in tuner.backbone_.named_parameters()})
        np.savez(f"{out_prefix}{name}_rank{torch.distributed.get_rank()}.npz", **weights)
    torch.distributed.destroy_process_group()
""")


def _weights(tuner):
    out = {"best_epoch": tuner.best_epoch_}
    out.update({"head." + k: v.numpy() for k, v in tuner.head_.state_dict().items()})
    out.update({"backbone." + k: v.detach().numpy() for k, v in tuner.backbone_.named_parameters()})
    return out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    # no dropout: the ranks' dropout draws cannot match one process's
    model = make_tiny_model("wav2vec2", root / "model", hidden_dropout=0.0,
                            attention_dropout=0.0)
    rng = np.random.RandomState(0)
    X = rng.randn(N_WINDOWS, N_SAMPLES).astype(np.float32)
    y = (X[:, ::1000] @ rng.randn(X[:, ::1000].shape[1], 3)).astype(np.float32)
    y += 0.5 * rng.randn(*y.shape).astype(np.float32)
    groups = np.repeat(np.arange(6), 5)
    data = dict(X=X, y=y, groups=groups, multi_X=np.concatenate([X, X]),
                multi_y=np.concatenate([y, y + rng.randn(*y.shape).astype(np.float32)]),
                multi_groups=np.concatenate([groups, groups]),
                multi_participants=np.repeat(["A", "B"], N_WINDOWS))
    np.savez(root / "data.npz", **data)
    return root, model, data


@pytest.fixture(scope="module")
def ddp_weights(problem):
    root, model, *_ = problem
    (root / "worker.py").write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2",
               LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               CUDA_VISIBLE_DEVICES="", PYTHONPATH=os.getcwd())
    args = [sys.executable, str(root / "worker.py"), model, str(root / "data.npz"),
            str(root / "out_"), json.dumps(CONFIGS), json.dumps(COMMON)]
    procs = [subprocess.Popen(args, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    for rank, proc in enumerate(procs):
        try:
            out, _ = proc.communicate(timeout=240)
        finally:
            for other in procs:
                if other.poll() is None and proc.returncode is None:
                    other.kill()
        assert proc.returncode == 0, f"rank {rank} failed:\n{out}"
    return {name: [dict(np.load(root / f"out_{name}_rank{r}.npz")) for r in range(2)]
            for name in CONFIGS}


def _noise_driven(key, loss):
    """Parameters the loss does not depend on: their true gradient is 0, so what Adam does with
    them is float rounding noise scaled up to the learning rate, in one process as in two."""
    if key.endswith("k_proj.bias"):  # the attention softmax ignores a shift of all scores
        return True
    # a correlation across samples ignores a constant shift of all predictions
    return loss == "correlation" and key in ("head.bias",
                                             "backbone.encoder.encoder.layers.1."
                                             "final_layer_norm.bias")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_processes_match_one(problem, ddp_weights, name):
    _, model, data = problem
    prefix = "multi_" if name == "participants" else ""
    fit_data = dict(X=data[prefix + "X"], y=data[prefix + "y"], groups=data[prefix + "groups"])
    if prefix:
        fit_data["participants"] = data["multi_participants"]
    single = _weights(BrainTuner(model, **COMMON, **CONFIGS[name]).fit(**fit_data))
    start = _weights(BrainTuner(model, **{**COMMON, "lr_backbone": 0.0, "lr_head": 0.0},
                                **CONFIGS[name]).fit(**fit_data))
    rank0, rank1 = ddp_weights[name]
    assert set(rank0) == set(single)
    for key in single:  # every rank holds the same weights, bit for bit
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=key)
    compared = [k for k in single if not _noise_driven(k, CONFIGS[name]["loss"])]
    # atol 1e-5: Adam turns a near-zero gradient element's rounding into up to lr-sized steps
    # (one element in 2000 moved 4e-6 off); the tuned parameters moved by ~3e-3
    for key in compared:
        np.testing.assert_allclose(rank0[key], single[key], rtol=1e-5, atol=1e-5, err_msg=key)
    # not vacuous: the head and trainable backbone parameters moved far beyond the tolerance
    moved = [k for k in compared if k != "best_epoch"
             and np.abs(single[k] - start[k]).max() > 1e-3]
    assert any(k.startswith("head.") for k in moved)
    assert sum(k.startswith("backbone.encoder.encoder.layers.1.") for k in moved) >= 5
