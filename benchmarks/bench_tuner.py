"""BrainTuner training throughput and peak memory.

CPU mode (default): the demo's backbone, Whisper tiny.en (``load_whisper_tiny_en``; a random
Whisper-tiny-sized config when the ``demo`` extra is missing), 6 s and 10 s windows:
full fine-tuning (peer) vs ``trainable_layers=2`` and ``trainable_layers=1`` with the frozen lower
layers computed once and cached. Each configuration runs in its own process so that peak RSS is
its own.

GPU mode (``--gpu``, needs CUDA): a base-size random wav2vec2 (12 layers, 768 hidden), 10 s
windows, batch 128, full fine-tuning in fp32 vs bf16 autocast (+ gradient checkpointing), with
peak GPU memory.

Top-block comparison (``--top-block``): the cached top-block path (``trainable_layers=1`` over
cached frozen layers) against (a) a bare PyTorch loop over the same block, the same cached
inputs, the same pooling, head, MSE loss, Adam and batch, and (b) the FLOP floor: the
forward+backward FLOPs of the block and head at the sgemm rate measured in the same run (a GEMM
of the block's own shape). The three are measured *interleaved* in one process, so that the
comparison holds on a machine shared with other jobs: one BrainTuner fit whose epochs are
``--steps`` optimiser steps, and after each epoch (from a callback) ``--steps`` bare-loop steps
and a short sgemm measurement; ``--rounds`` rounds after a warm-up round. The overhead is the
median of the per-round time ratios (their spread is reported), the fraction of the floor is
per round against that round's sgemm rate. ``--profile`` adds torch.profiler tables of one
BrainTuner epoch and one bare block. Results go to ``--output`` as JSON (figures already in that
file are kept under ``"before"``).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_tuner.py [--threads 2] [--windows 6 10]
    nice -n 10 python benchmarks/bench_tuner.py --top-block --threads 1 [--rounds 6] \
        [--steps 2] [--profile] [--output benchmarks/results/bench_tuner_top_block_1thread.json]
    python benchmarks/bench_tuner.py --gpu
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SR = 16_000


def whisper_tiny_path():
    """Whisper tiny.en (converted, cached) or a random config of the same size."""
    try:
        from sk_braintune.builtin import load_whisper_tiny_en

        return load_whisper_tiny_en(), "whisper tiny.en (pretrained)"
    except Exception as exc:  # noqa: BLE001 - the demo extra may be missing
        from sk_braintune.testing.models import make_tiny_model

        directory = os.path.join(tempfile.gettempdir(), "sk_braintune_bench_whisper_tiny")
        path = make_tiny_model("whisper", directory, d_model=384, encoder_layers=4,
                               encoder_attention_heads=6, encoder_ffn_dim=1536,
                               decoder_layers=1, decoder_attention_heads=6,
                               decoder_ffn_dim=1536)
        return path, f"random Whisper-tiny-sized config ({type(exc).__name__}: {exc})"


def base_size_path():
    from sk_braintune.testing.models import make_tiny_model

    directory = os.path.join(tempfile.gettempdir(), "sk_braintune_bench_w2v_base")
    return make_tiny_model(
        "wav2vec2", directory, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, conv_dim=(512,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2), num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16)


def run_one(args):
    """One configuration in this process; prints a JSON line."""
    import torch

    from sk_braintune.tuning import BrainTuner

    torch.set_num_threads(args.threads)
    rng = np.random.RandomState(0)
    X = (0.1 * rng.randn(args.n_windows, int(args.window * SR))).astype(np.float32)
    y = rng.randn(args.n_windows, 200).astype(np.float32)
    trainable = None if args.trainable_layers < 0 else args.trainable_layers
    est = BrainTuner(args.model, trainable_layers=trainable, batch_size=args.batch_size,
                     max_epochs=args.epochs, validation=None, random_state=0,
                     device="cuda" if args.gpu else "cpu",
                     precision=args.precision)
    if args.gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    est.fit(X, y)
    total = time.perf_counter() - started
    epoch_seconds = [h["seconds"] for h in est.history_]
    train_seconds = float(np.sum(epoch_seconds))
    result = {
        "window_s": args.window, "trainable_layers": trainable, "n_windows": args.n_windows,
        "epochs": args.epochs, "batch_size": args.batch_size, "precision": args.precision,
        "setup_and_cache_s": round(total - train_seconds, 2),
        "seconds_per_epoch": round(train_seconds / len(epoch_seconds), 2),
        "train_windows_per_s": round(args.n_windows * len(epoch_seconds) / train_seconds, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
        "trainable_parameters": est.n_trainable_parameters_,
    }
    if args.gpu:
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    print("RESULT " + json.dumps(result), flush=True)


def block_flops(config, n_frames, batch, n_targets):
    """Forward and backward FLOPs of one Whisper encoder block + final norm + pooling + head.

    Counts the matrix products only (2 FLOPs per multiply-add): q, k, v, out projections
    (4 F d^2), scores and weighted values (2 F^2 d), the feed-forward pair (2 F d f), per window,
    and the head (d K). The backward pass costs twice the forward for every product except the
    first projections, whose input (the cached frozen hidden state) needs no gradient: those
    cost once more (weight gradient only).
    """
    d, f, F = config.d_model, config.encoder_ffn_dim, n_frames
    qkv = 3 * 2 * F * d * d
    out_proj = 2 * F * d * d
    attention = 2 * 2 * F * F * d
    ffn = 2 * 2 * F * d * f
    head = 2 * d * n_targets
    forward = qkv + out_proj + attention + ffn + head
    backward = 2 * (forward - qkv) + qkv
    return batch * forward, batch * backward


def sgemm_rate(m, k, n, seconds=1.0):
    """Measured float32 GEMM rate (FLOP/s) for an (m x k) @ (k x n) product."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(5):
            a @ b
        best = min(best, (time.perf_counter() - started) / 5)
    return 2 * m * k * n / best


class _BareLoop:
    """The peer: the same top block, cached inputs, pooling, head, MSE loss, Adam and batch,
    written as plain PyTorch over its own copy of the backbone."""

    def __init__(self, model, X, y, batch_size, lr):
        import torch

        from sk_braintune.models import load_backbone

        backbone = load_backbone(model)
        n_layers = backbone.num_hidden_layers
        with torch.inference_mode():
            parts = [backbone.hidden_at(torch.from_numpy(X[i:i + 32]), n_layers - 1)
                     for i in range(0, len(X), 32)]
        self.hidden = torch.cat([p[0] for p in parts]).clone()
        self.mask = torch.cat([p[1] for p in parts]).clone()
        self.block = backbone.encoder.layers[-1]
        self.norm = backbone.encoder.layer_norm
        self.head = torch.nn.Linear(backbone.hidden_size, y.shape[1])
        params = [*self.block.parameters(), *self.norm.parameters(), *self.head.parameters()]
        for p in params:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.targets = torch.from_numpy(y)
        self.order_rng = np.random.RandomState(1)
        self.batch_size = batch_size
        self.config = backbone.config

    def step(self, index):
        import torch

        h = self.block(self.hidden[index], None)
        h = h[0] if isinstance(h, tuple) else h
        h = self.norm(h)
        weights = self.mask[index].to(h.dtype).unsqueeze(-1)
        pooled = (h * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        loss = torch.mean((self.head(pooled) - self.targets[index]) ** 2)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def block_seconds(self, n_steps):
        """Seconds for ``n_steps`` optimiser steps over a fresh shuffle of the windows."""
        import torch

        self.block.train()
        started = time.perf_counter()
        order = self.order_rng.permutation(len(self.hidden))
        for b in range(n_steps):
            self.step(torch.from_numpy(order[b * self.batch_size:(b + 1) * self.batch_size]))
        return time.perf_counter() - started


def _spread(values):
    values = np.asarray(values, dtype=float)
    return {"median": float(np.median(values)), "min": float(values.min()),
            "max": float(values.max()), "q25": float(np.percentile(values, 25)),
            "q75": float(np.percentile(values, 75))}


def run_top_block(args):
    """BrainTuner's cached top block vs a bare loop vs the FLOP floor, interleaved; prints JSON.

    One BrainTuner fit of ``--rounds + 1`` epochs of ``--steps`` optimiser steps each (the first
    epoch warms up and is not counted). A callback runs ``--steps`` steps of the bare loop next to
    each epoch (before it in even epochs, after it in odd ones) and a short sgemm-rate
    measurement, so product, peer and floor are measured within seconds of each other under the
    same machine load; the per-round ratios tell how much of the spread is load.
    """
    import torch

    from sk_braintune.tuning import BrainTuner
    from sk_braintune.tuning.callbacks import Callback

    torch.set_num_threads(args.threads)
    rng = np.random.RandomState(0)
    n_windows = args.steps * args.batch_size
    X = (0.1 * rng.randn(n_windows, int(args.window * SR))).astype(np.float32)
    y = rng.randn(n_windows, args.n_targets).astype(np.float32)
    lr = 1e-4
    bare = _BareLoop(args.model, X, y, args.batch_size, lr)
    config = bare.config
    n_frames = bare.hidden.shape[1]
    forward, backward = block_flops(config, n_frames, args.batch_size, args.n_targets)
    block_flop = args.steps * (forward + backward)

    rounds = []
    profiles = {}
    profiled_epoch = 1 if args.profile else None

    def table(prof):
        return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)

    class Interleave(Callback):
        """Even epochs: bare block, then the epoch; odd epochs: the epoch, then the bare block
        (so each pair is adjacent and neither side always goes first); then an sgemm rate."""

        def on_epoch_begin(self, estimator, run):
            self.bare_first = None
            if run.epoch % 2 == 0:
                started = time.perf_counter()
                peer = bare.block_seconds(args.steps)
                self.bare_first = (peer, time.perf_counter() - started)
            if run.epoch == profiled_epoch:
                from torch.profiler import ProfilerActivity, profile

                self.prof = profile(activities=[ProfilerActivity.CPU])
                self.prof.__enter__()

        def on_batch_end(self, estimator, run, train_loss):
            # the profile stops after the epoch's last step: no checkpoint writing in it
            if run.epoch == profiled_epoch and run.step % run.steps_per_epoch == 0:
                self.prof.__exit__(None, None, None)
                profiles["profile_tuner"] = table(self.prof)

        def on_epoch_end(self, estimator, run):
            # the fit's own epoch time, less the bare block run inside on_epoch_begin
            product = run.history[-1]["seconds"]
            if self.bare_first is not None:
                peer, spent = self.bare_first
                product -= spent
            elif run.epoch == profiled_epoch:
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    peer = bare.block_seconds(args.steps)
                profiles["profile_bare"] = table(prof)
            else:
                peer = bare.block_seconds(args.steps)
            rate = sgemm_rate(args.batch_size * n_frames, config.d_model,
                              config.encoder_ffn_dim, seconds=args.sgemm_seconds)
            rounds.append({"tuner_s": product, "bare_s": peer, "sgemm_gflops": rate / 1e9,
                           "first": "bare" if self.bare_first is not None else "tuner"})

    callbacks = [Interleave()]
    est = BrainTuner(args.model, trainable_layers=1, batch_size=args.batch_size,
                     max_epochs=args.rounds + 1, validation=None, random_state=0,
                     lr_backbone=lr, lr_head=lr, warmup_fraction=0.0, device="cpu",
                     precision="fp32", callbacks=callbacks)
    est.fit(X, y)
    counted = [r for i, r in enumerate(rounds) if i > 0 and i != profiled_epoch]
    ratio = [r["tuner_s"] / r["bare_s"] for r in counted]
    floor_s = [block_flop / (r["sgemm_gflops"] * 1e9) for r in counted]
    best_rate = max(r["sgemm_gflops"] for r in counted) * 1e9
    tuner_s = np.array([r["tuner_s"] for r in counted])
    bare_s = np.array([r["bare_s"] for r in counted])
    result = {
        "method": (f"interleaved in one process: {len(counted)} rounds, each {args.steps} "
                   "optimiser steps of BrainTuner (one epoch of a fit) and as many bare-loop "
                   "steps (bare first in even rounds, BrainTuner first in odd ones), then an "
                   "sgemm-rate measurement; the warm-up round (and a profiled one) dropped"),
        "window_s": args.window, "n_frames": n_frames, "batch_size": args.batch_size,
        "n_windows": n_windows, "n_targets": args.n_targets, "threads": args.threads,
        "rounds": len(counted), "steps_per_round": args.steps,
        "tuner_step_s": _spread(tuner_s / args.steps),
        "bare_step_s": _spread(bare_s / args.steps),
        "ratio_tuner_over_bare": _spread(ratio),
        "ratio_when_tuner_first": float(np.median([q for q, r in zip(ratio, counted)
                                                   if r["first"] == "tuner"] or [np.nan])),
        "ratio_when_bare_first": float(np.median([q for q, r in zip(ratio, counted)
                                                  if r["first"] == "bare"] or [np.nan])),
        "overhead_vs_bare_%": 100 * (float(np.median(ratio)) - 1),
        "overhead_vs_bare_%_of_summed_times": 100 * (tuner_s.sum() / bare_s.sum() - 1),
        "tuner_windows_per_s": float(args.batch_size / np.median(tuner_s / args.steps)),
        "bare_windows_per_s": float(args.batch_size / np.median(bare_s / args.steps)),
        "sgemm_gflops": _spread([r["sgemm_gflops"] for r in counted]),
        "flops_per_step": {"forward": forward, "backward": backward},
        # per round: the floor at the sgemm rate measured in that round (same load)
        "tuner_fraction_of_floor": _spread(np.array(floor_s) / tuner_s),
        "bare_fraction_of_floor": _spread(np.array(floor_s) / bare_s),
        # against the best sgemm rate of the run (closest to an idle machine)
        "tuner_fraction_of_best_floor": float(block_flop / best_rate / tuner_s.min()),
        "bare_fraction_of_best_floor": float(block_flop / best_rate / bare_s.min()),
        "floor_windows_per_s_best": float(args.batch_size * args.steps * best_rate / block_flop),
        "per_round": counted,
        "load_average_1min": os.getloadavg()[0],
    }
    result.update(profiles)
    print("RESULT " + json.dumps(result), flush=True)


def spawn(model, threads, extra):
    cmd = [sys.executable, os.path.abspath(__file__), "--one", "--model", model,
           "--threads", str(threads), *map(str, extra)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"benchmark run failed:\n{out.stderr[-3000:]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="base-size model on CUDA")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=float, nargs="+", default=[6.0, 10.0])
    parser.add_argument("--full-windows", type=int, default=16,
                        help="windows for the full fine-tuning peer (slow on CPU)")
    parser.add_argument("--cached-windows", type=int, default=128)
    parser.add_argument("--top-block", action="store_true",
                        help="cached top block vs a bare PyTorch loop vs the FLOP floor")
    parser.add_argument("--rounds", type=int, default=6,
                        help="--top-block: interleaved rounds counted (after one warm-up)")
    parser.add_argument("--steps", type=int, default=2,
                        help="--top-block: optimiser steps per round and loop")
    parser.add_argument("--sgemm-seconds", type=float, default=0.5,
                        help="--top-block: sgemm-rate measurement per round")
    parser.add_argument("--n-targets", type=int, default=700)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    # internal: one configuration
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--window", type=float, default=8.0, help="--top-block: window (s)")
    parser.add_argument("--trainable-layers", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--n-windows", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=32, help="--top-block: batch")
    parser.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one and args.top_block:
        run_top_block(args)
        return
    if args.one:
        run_one(args)
        return
    if args.top_block:
        model, what = whisper_tiny_path()
        print(f"CPU, {args.threads} thread(s), model: {what}; cached top block, "
              f"{args.window:g} s windows, batch {args.batch_size}")
        r = spawn(model, args.threads, [
            "--top-block", "--window", args.window, "--steps", args.steps, "--rounds",
            args.rounds, "--batch-size", args.batch_size, "--n-targets", args.n_targets,
            "--sgemm-seconds", args.sgemm_seconds, *(["--profile"] if args.profile else [])])
        for key, value in r.items():
            if not key.startswith("profile") and key != "per_round":
                print(f"  {key}: {value}")
        print("  per round (tuner s, bare s, ratio, sgemm GFLOP/s, first):")
        for row in r["per_round"]:
            print(f"    {row['tuner_s']:.2f}  {row['bare_s']:.2f}  "
                  f"{row['tuner_s'] / row['bare_s']:.3f}  {row['sgemm_gflops']:.1f}  "
                  f"{row['first']}")
        for key in ("profile_tuner", "profile_bare"):
            if key in r:
                print(f"\n{key}:\n{r[key]}")
        if args.output:
            before = None
            if os.path.exists(args.output):
                with open(args.output) as f:
                    previous = json.load(f)
                before = previous.get("before", previous)
            out = dict(r, model=what)
            if before is not None:
                out["before"] = before
            with open(args.output, "w") as f:
                json.dump(out, f, indent=2)
        return

    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            sys.exit("--gpu needs a CUDA device (torch.cuda.is_available() is False).")
        model = base_size_path()
        print(f"GPU: {torch.cuda.get_device_name()}, base-size random wav2vec2 (12 x 768), "
              "10 s windows, batch 128, full fine-tuning")
        rows = [spawn(model, args.threads, ["--gpu", "--window", 10, "--n-windows", 512,
                                            "--epochs", 1, "--batch-size", 128,
                                            "--precision", precision])
                for precision in ("fp32", "bf16")]
    else:
        model, what = whisper_tiny_path()
        print(f"CPU, {args.threads} thread(s), model: {what}")
        rows = []
        for window in args.windows:
            rows.append(spawn(model, args.threads, [
                "--window", window, "--n-windows", args.full_windows, "--epochs", 1,
                "--batch-size", 16]))
            for k in (2, 1):
                rows.append(spawn(model, args.threads, [
                    "--window", window, "--trainable-layers", k, "--n-windows",
                    args.cached_windows, "--epochs", 2, "--batch-size", 32]))
    header = ("window", "trainable", "precision", "n", "setup+cache s", "s/epoch",
              "train win/s", "peak RSS GiB", "peak GPU GiB")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(str(v) for v in (
            r["window_s"], "all" if r["trainable_layers"] is None else r["trainable_layers"],
            r["precision"], r["n_windows"], r["setup_and_cache_s"], r["seconds_per_epoch"],
            r["train_windows_per_s"], r["peak_rss_gib"], r.get("peak_gpu_gib", "-"))))
    if not args.gpu:
        by = {(r["window_s"], r["trainable_layers"]): r for r in rows}
        for window in args.windows:
            full = by[(window, None)]["train_windows_per_s"]
            for k in (2, 1):
                cached = by[(window, k)]
                n_cache = cached["n_windows"]
                print(f"{window:g} s windows: trainable_layers={k} trains "
                      f"{cached['train_windows_per_s'] / full:.1f}x faster than full fine-tuning "
                      f"(+ {cached['setup_and_cache_s']:.1f} s once for loading and caching "
                      f"{n_cache} windows)")


if __name__ == "__main__":
    main()
