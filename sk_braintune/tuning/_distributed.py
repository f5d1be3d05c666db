"""Data-parallel tuning over several processes (``torchrun``), exact to one process's fit.

A fit is distributed when ``torch.distributed`` is initialised with more than one process, or
when ``torchrun`` set ``WORLD_SIZE > 1`` in the environment (the process group is then
initialised here: NCCL on CUDA, gloo on the CPU). Each global batch (the rows one process would
take, in the same order) is cut into ``world_size`` contiguous shards; every rank forwards its
shard through the trainable backbone (wrapped in ``DistributedDataParallel``), the pooled features
are gathered (with autograd) into the whole batch on every rank, and the head and the loss run on
that whole batch exactly as in one process. Any loss (also ``"correlation"`` across the batch's
samples) thus gets the single-process gradient: the gather's backward sums the ranks' identical
gradients (``world_size`` times the gradient of the own rows) and DDP averages over ranks.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np


@dataclass
class DistributedContext:
    """Where this process stands in a distributed fit.

    Attributes
    ----------
    rank, world_size, local_rank : int
    """

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self):
        return self.rank == 0

    def shard(self, windows):
        """This rank's contiguous shard of ``windows``, padded to ``ceil(n / world_size)``.

        Padding repeats the last window; :func:`gather_rows` drops it again, so the gathered
        rows are ``windows`` in order.
        """
        per_rank = math.ceil(len(windows) / self.world_size)
        mine = windows[self.rank * per_rank:(self.rank + 1) * per_rank]
        if len(mine) < per_rank:
            mine = np.concatenate([mine, np.repeat(windows[-1:], per_rank - len(mine))])
        return mine

    def broadcast(self, obj):
        """Rank 0's ``obj`` (any picklable object), on every rank."""
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_tensors(self, tensors):
        """Overwrite ``tensors`` in place with rank 0's values."""
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor.data, src=0)


def distributed_context():
    """The :class:`DistributedContext` of this fit, or None for a one-process fit.

    Initialises the default process group from the ``torchrun`` environment when it is not yet
    initialised (NCCL when CUDA is available, gloo otherwise).
    """
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        return None
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {missing} are not: launch the "
                "script with `torchrun --nproc_per_node N script.py`, or call "
                "torch.distributed.init_process_group() yourself before fit.")
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.get_world_size() <= 1:
        return None
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                              local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def resolve_distributed_device(device, context):
    """This rank's device: ``cuda:LOCAL_RANK`` for ``"auto"``/``"cuda"`` with CUDA, else as
    given (the CPU without CUDA)."""
    import torch

    if device in (None, "auto", "cuda") and torch.cuda.is_available():
        index = context.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if device in (None, "auto"):
        return torch.device("cpu")
    return torch.device(device)


def gather_rows(local, n_rows):
    """Concatenate every rank's ``local`` (same shape on each) and keep the first ``n_rows``.

    Differentiable: the backward all-reduces (sums) the gradient of the gathered tensor and
    returns this rank's slice, the adjoint of the gather.

    Parameters
    ----------
    local : torch.Tensor of shape (m, ...)
    n_rows : int

    Returns
    -------
    gathered : torch.Tensor of shape (n_rows, ...)
    """
    return _gather_function().apply(local)[:n_rows]


@functools.lru_cache(maxsize=None)
def _gather_function():
    """The autograd Function behind :func:`gather_rows` (defined on first use: this module
    imports no torch)."""
    import torch
    import torch.distributed as dist

    class GatherRows(torch.autograd.Function):
        @staticmethod
        def forward(ctx, local):
            local = local.contiguous()
            parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, local)
            ctx.rows = (dist.get_rank() * local.shape[0], (dist.get_rank() + 1) * local.shape[0])
            return torch.cat(parts)

        @staticmethod
        def backward(ctx, grad):
            grad = grad.contiguous().clone()
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
            return grad[ctx.rows[0]:ctx.rows[1]]

    return GatherRows


def pooled_module(backbone, pooling, start_layer=None):
    """A ``torch.nn.Module`` computing pooled features, to wrap in DistributedDataParallel.

    ``forward(waveforms)`` runs the whole backbone; with ``start_layer`` set,
    ``forward(hidden, frame_mask)`` runs the blocks above cached hidden states.
    """
    import torch

    from . import _network

    class PooledFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone

        def forward(self, inputs, frame_mask=None):
            if start_layer is None:
                return _network.pooled_full(self.backbone, inputs, pooling)
            return _network.pooled_cached(self.backbone, inputs, frame_mask, start_layer,
                                          pooling)

    return PooledFeatures()
