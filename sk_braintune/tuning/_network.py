"""The trainable network of a BrainTuner: backbone parts, pooling and linear head.

Two equivalent forward paths:

- *full*: waveforms -> ``backbone.forward`` -> pooled last hidden state -> head;
- *cached*: frozen lower layers computed once (``backbone.hidden_at(x, start)`` under
  ``torch.inference_mode``), then ``backbone.forward_from(hidden, start, frame_mask)`` -> pooled ->
  head for every training step. Only the top layers run forward and backward each epoch.
"""

from __future__ import annotations

import math

import numpy as np

from ..models.pooling import pool_frames

# the frozen-layer cache is stored as float16 beyond this size (float32 below); a cache shared
# between fits is a sk_braintune.tuning.FrozenLayerCache
CACHE_FLOAT32_LIMIT_BYTES = 4 * 1024 ** 3


def make_head(in_features, n_targets, seed):
    """Linear head, initialised like ``torch.nn.Linear`` but from a private generator.

    Weight ~ U(-1/sqrt(D), 1/sqrt(D)), bias 0; the global torch RNG is not used.
    """
    import torch

    head = torch.nn.Linear(in_features, n_targets)
    generator = torch.Generator().manual_seed(int(seed))
    bound = 1.0 / math.sqrt(in_features)
    with torch.no_grad():
        head.weight.copy_(torch.rand(head.weight.shape, generator=generator) * 2 * bound - bound)
        head.bias.zero_()
    return head


def pooled_full(backbone, waveforms, pooling):
    """Pooled last hidden state from waveforms, shape (B, D): one backbone forward."""
    out = backbone(waveforms, output_hidden_states=False)
    return pool_frames(out.last_hidden_state, out.frame_mask, pooling)


def pooled_cached(backbone, hidden, frame_mask, start_layer, pooling):
    """Pooled last hidden state from cached hidden states of layer ``start_layer``, (B, D)."""
    last = backbone.forward_from(hidden, start_layer, frame_mask)
    return pool_frames(last, frame_mask, pooling)


def forward_full(backbone, head, waveforms, pooling):
    """Predictions from waveforms, shape (B, K); also returns the pooled features (B, D)."""
    pooled = pooled_full(backbone, waveforms, pooling)
    return head(pooled), pooled


def forward_cached(backbone, head, hidden, frame_mask, start_layer, pooling):
    """Predictions from cached hidden states of layer ``start_layer``, shape (B, K)."""
    pooled = pooled_cached(backbone, hidden, frame_mask, start_layer, pooling)
    return head(pooled), pooled


def parameters_after(backbone, start_layer, n_samples):
    """Names of the backbone parameters to train above ``hidden_states[start_layer]``.

    Found by one tiny forward/backward through each half: the parameters that
    ``forward_from(., start_layer, .)`` uses (top blocks, a final layer norm of
    stable-layer-norm models and Whisper, ...), minus any that ``hidden_at(., start_layer)`` also
    uses (e.g. WavLM's relative position embedding, shared by all blocks), which must stay frozen
    so that cached lower layers remain valid. Works for any family.
    """
    import torch

    params = dict(backbone.named_parameters())
    saved = {name: p.requires_grad for name, p in params.items()}
    was_training = backbone.training
    backbone.eval()

    def used_by(run):
        for p in params.values():
            p.grad = None
        run().float().sum().backward()
        return {name for name, p in params.items() if p.grad is not None}

    try:
        for p in params.values():
            p.requires_grad_(True)
        x = torch.zeros(1, n_samples, device=next(backbone.parameters()).device)
        below = used_by(lambda: backbone.hidden_at(x, start_layer)[0])
        with torch.no_grad():
            hidden, mask = backbone.hidden_at(x, start_layer)
        hidden = hidden.detach().float().requires_grad_(True)
        above = used_by(lambda: backbone.forward_from(hidden, start_layer, mask))
    finally:
        for name, p in params.items():
            p.grad = None
            p.requires_grad_(saved[name])
        backbone.train(was_training)
    return above - below


def cache_hidden(backbone, windows_fn, n_windows, start_layer, batch_size, device, autocast,
                 progress):
    """Compute ``hidden_at(x, start_layer)`` for every window, stored on the CPU.

    Parameters
    ----------
    windows_fn : callable
        ``windows_fn(index) -> ndarray (len(index), n_samples) float32``.
    autocast : context manager factory
        Autocast for the device (bf16 on CUDA) or a null context.
    progress : callable
        ``progress(iterable, desc, total) -> iterable`` (a tqdm wrapper).

    Returns
    -------
    hidden : torch.Tensor of shape (n_windows, F, D), float32 (float16 when large)
    frame_mask : torch.Tensor of shape (n_windows, F), bool
    """
    import torch

    from ..features import forward_batches

    store = {}

    def keep(index, hidden, mask):
        (hidden,) = hidden
        if not store:
            n_bytes = n_windows * hidden.shape[1] * hidden.shape[2] * 4
            dtype = torch.float32 if n_bytes <= CACHE_FLOAT32_LIMIT_BYTES else torch.float16
            store["hidden"] = torch.empty((n_windows, *hidden.shape[1:]), dtype=dtype,
                                          pin_memory=device.type == "cuda")
            store["mask"] = torch.empty((n_windows, mask.shape[1]), dtype=torch.bool)
        store["hidden"][index[0]:index[-1] + 1] = hidden.to("cpu", store["hidden"].dtype)
        store["mask"][index[0]:index[-1] + 1] = mask.to("cpu")

    forward_batches(backbone, range(n_windows), [start_layer], keep, batch_size=batch_size,
                    load_batch=windows_fn, autocast=autocast, progress=progress,
                    description="caching frozen layers")
    return store.get("hidden"), store.get("mask")


class HeadOutputs:
    """A :func:`~sk_braintune.features.forward_batches` consumer: head outputs per window.

    Each batch's last hidden state is pooled over its real frames and passed through the head,
    as :meth:`BrainTuner.predict <sk_braintune.BrainTuner.predict>` does.

    Parameters
    ----------
    head : torch.nn.Module
        Maps pooled features ``(B, hidden_size)`` to ``(B, head.out_features)``.
    n_windows : int
    pooling : {"mean", "last"}

    Attributes
    ----------
    outputs : ndarray of shape (n_windows, head.out_features), float32
        Filled batch by batch.
    """

    def __init__(self, head, n_windows, pooling):
        self.head, self.pooling = head, pooling
        self.outputs = np.empty((n_windows, head.out_features), dtype=np.float32)

    def __call__(self, index, hidden, mask):
        if len(hidden) != 1:
            raise ValueError('a head reads one state: run forward_batches with layers='
                             f'"last_hidden_state", not {len(hidden)} hidden states')
        pooled = pool_frames(hidden[0], mask, self.pooling)
        self.outputs[index] = self.head(pooled.float()).float().cpu().numpy()


def apply_lora(backbone, rank, alpha, trainable_names, dropout=0.0):
    """Inject LoRA adapters (peft) into the attention projections of the trainable blocks.

    Parameters
    ----------
    backbone : AudioBackbone
    rank : int
    alpha : float or None
        LoRA scaling numerator; ``2 * rank`` when None.
    trainable_names : set of str or None
        Backbone parameter names allowed to adapt (None: all blocks).
    dropout : float, default=0.0
        Dropout on the adapters' input (peft's ``lora_dropout``).

    Returns
    -------
    n_adapted : int
        Number of linear layers that received an adapter.
    """
    from .._utils import require

    peft = require("peft", "LoRA")
    import torch

    suffixes = ("q_proj", "k_proj", "v_proj", "out_proj")
    prefix = "encoder."
    targets = []
    for name, module in backbone.named_modules():
        if not (isinstance(module, torch.nn.Linear) and name.split(".")[-1] in suffixes):
            continue
        if trainable_names is not None and f"{name}.weight" not in trainable_names:
            continue
        if not name.startswith(prefix):
            continue
        targets.append(name[len(prefix):])
    if not targets:
        raise ValueError("lora_rank: found no attention projections (q/k/v/out_proj) to adapt in "
                         "the trainable layers of this backbone.")
    alpha = float(alpha if alpha is not None else 2 * rank)
    config = peft.LoraConfig(r=int(rank), lora_alpha=alpha, lora_dropout=float(dropout),
                             target_modules=targets, bias="none")
    peft.inject_adapter_in_model(config, backbone.encoder)
    for name, p in backbone.named_parameters():
        p.requires_grad_("lora_" in name)
    return len(targets)


def merge_lora(backbone):
    """Fold LoRA adapters into their base weights and put the plain layers back."""
    from peft.tuners.lora import LoraLayer

    for parent in list(backbone.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, child_name, child.get_base_layer())
