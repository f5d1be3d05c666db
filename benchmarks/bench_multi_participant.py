"""Multi-participant BrainTuner: one backbone forward per stimulus batch vs one per row.

The rows of a multi-participant fit are (window, participant) pairs. The peer is what a
single-participant tuner does with the same rows: every row is its own sample, so each window
is forwarded once per participant. ``BrainTuner.fit(..., participants=...)`` forwards each
batch of windows once and computes every participant's loss on it. Both go through every row
once per epoch (the tuner in batches of ``--batch-size`` windows, the peer in batches of
``--batch-size`` rows), so the figure to compare is the time per epoch.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_multi_participant.py [--participants 1 2 4]
        [--windows 32] [--window 6] [--epochs 2] [--threads 2]

Model: Whisper tiny.en when the ``demo`` extra is installed, else a random model of its size;
full fine-tuning (no frozen-layer cache, where the backbone's forward and backward dominate).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SR = 16_000


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--windows", type=int, default=32, help="distinct stimulus windows")
    parser.add_argument("--window", type=float, default=6.0, help="window length (s)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="model directory (default: Whisper tiny.en)")
    args = parser.parse_args()

    import torch

    from sk_braintune.tuning import BrainTuner
    from sk_braintune.windows import make_windows

    torch.set_num_threads(args.threads)
    model, label = (args.model, args.model) if args.model else _whisper_tiny()
    rng = np.random.RandomState(0)
    n_per_story = args.windows // 4
    audio = {f"s{i}": (0.1 * rng.randn(int((n_per_story + args.window + 1) * SR)))
             .astype(np.float32) for i in range(4)}
    times = {s: np.arange(n_per_story) + args.window + 0.5 for s in audio}
    windows = make_windows(audio, times, window=args.window, tr=1.0)
    print(f"{label}; {len(windows)} windows of {args.window:g} s, batch {args.batch_size}, "
          f"{args.epochs} epochs, {args.threads} threads")
    print(f"{'participants':>12} {'rows':>6} {'peer s/epoch':>13} {'tuner s/epoch':>14} "
          f"{'speed-up':>9}")
    for k in args.participants:
        index = np.concatenate([np.flatnonzero(windows.stories == s)
                                for s in audio for _ in range(k)])
        X = windows[index]
        y = rng.randn(len(X), 20).astype(np.float32)
        labels = np.concatenate([np.repeat(np.arange(k), n_per_story) for _ in audio])
        params = dict(max_epochs=args.epochs, batch_size=args.batch_size, validation=None,
                      random_state=0, device="cpu")
        timings = []
        for participants in (None, labels):
            t0 = time.perf_counter()
            est = BrainTuner(model, **params).fit(X, y, participants=participants)
            timings.append(sum(h["seconds"] for h in est.history_) / len(est.history_))
            del est
        print(f"{k:>12} {len(X):>6} {timings[0]:>13.2f} {timings[1]:>14.2f} "
              f"{timings[0] / timings[1]:>8.2f}x", flush=True)


def _whisper_tiny():
    try:
        from sk_braintune.builtin import load_whisper_tiny_en

        return load_whisper_tiny_en(), "whisper tiny.en (pretrained)"
    except Exception:  # noqa: BLE001 - the demo extra or its model package is missing
        import tempfile

        from sk_braintune.testing import make_tiny_model

        path = make_tiny_model("whisper", tempfile.mkdtemp(), d_model=384, encoder_layers=4,
                               encoder_attention_heads=6, encoder_ffn_dim=1536)
        return path, "random Whisper-tiny-sized encoder"


if __name__ == "__main__":
    main()
