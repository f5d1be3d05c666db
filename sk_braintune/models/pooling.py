"""Pooling a backbone's frames into one vector per window, over the frames holding real audio."""

from __future__ import annotations

__all__ = ["POOLINGS", "pool_frames"]

POOLINGS = ("mean", "last", "last_tr_mean")


def pool_frames(hidden, frame_mask, pooling="mean", n_tr_frames=None, *, weights_first=False):
    """Pool frames into one vector per window, over real frames only.

    Parameters
    ----------
    hidden : torch.Tensor of shape (B, F, D)
        One layer's hidden states.
    frame_mask : torch.Tensor of shape (B, F), bool
        True for frames holding real audio (a prefix of each row, as backbones return it).
    pooling : {"mean", "last", "last_tr_mean"}, default="mean"
        The mean over the real frames, the last real frame, or the mean over the last
        ``n_tr_frames`` real frames.
    n_tr_frames : int, optional
        Frames pooled by ``"last_tr_mean"`` (required for it).
    weights_first : bool, default=False
        Mean pooling only: False sums the masked frames in ``hidden``'s dtype and divides by the
        frame count; True divides the float32 mask by the count first and takes the weighted
        sum in float32 (the probe's and the semantic preference's convention, which also keeps
        half-precision backbones from accumulating in half precision). Both give the same mean
        up to float rounding.

    Returns
    -------
    pooled : torch.Tensor of shape (B, D)
        In ``hidden``'s dtype (float32 with ``weights_first``). A row without real frames pools
        to 0 (mean) or to frame 0 (last).
    """
    import torch

    mask = frame_mask.to(hidden.device)
    if pooling == "last":
        real = mask.sum(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device),
                      (real - 1).clamp(min=0)]
    if pooling == "last_tr_mean":
        if n_tr_frames is None:
            raise ValueError('pooling="last_tr_mean" needs n_tr_frames (frames per TR)')
        real = mask.sum(dim=1)
        frame = torch.arange(mask.shape[1], device=mask.device)[None]
        mask = mask & (frame >= (real - int(n_tr_frames)).clamp(min=0)[:, None])
    elif pooling != "mean":
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if weights_first:
        weights = mask.float() / mask.float().sum(dim=1, keepdim=True).clamp(min=1.0)
        return torch.einsum("bf,bfd->bd", weights, hidden.float())
    weights = mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
