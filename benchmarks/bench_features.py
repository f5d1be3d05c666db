"""Feature extraction throughput: SpeechFeatureExtractor and the 0.1 s protocol vs bare HF loops.

Each case runs in its own subprocess with one torch thread, so that its peak resident memory is
its own; times are the best of 2 runs after a warm-up (the machine may be shared). Models are
random but real-sized: a 4-layer, 256-wide wav2vec2 with the real CNN strides (128 channels),
and a Whisper-tiny-sized encoder (4 layers, d=384). The peer is a plain loop over the same
windows: the Hugging Face feature extractor (NumPy) + ``model(..., output_hidden_states=True)``
+ the same pooling. For Whisper the peer is shown twice: Hugging Face's default 30 s padding,
and an encoder built for the window length (the same computation as our sliced positions).

Run: ``PYTHONPATH=. python benchmarks/bench_features.py [--story-seconds 120]``.
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
import warnings

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

SR = 16000
TR = 2.0045
WINDOW = 16.0

CONFIGS = {
    "wav2vec2": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=1024, conv_dim=(128,) * 7,
                     conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                     num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16),
    "whisper": dict(d_model=384, encoder_layers=4, encoder_attention_heads=6,
                    encoder_ffn_dim=1536, decoder_layers=1, decoder_attention_heads=6,
                    decoder_ffn_dim=1536),
}


def _audio(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    # noise with a slow envelope: enough structure for real-looking activations
    return (0.1 * rng.standard_normal(t.size) * (1 + np.sin(2 * np.pi * t / 3))).astype(np.float32)


def _hf_peer(path, family, n_samples, sliced):
    import torch
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fe = transformers.AutoFeatureExtractor.from_pretrained(path)
        if family != "whisper":
            model = transformers.AutoModel.from_pretrained(path).eval()
            return lambda x: model(fe(list(x), sampling_rate=SR, return_tensors="pt")
                                   .input_values, output_hidden_states=True), None
        encoder = transformers.WhisperModel.from_pretrained(path).get_encoder().eval()
        if not sliced:
            return lambda x: encoder(fe(list(x), sampling_rate=SR, return_tensors="pt")
                                     .input_features, output_hidden_states=True), \
                int(np.ceil(n_samples / 320))
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        frames = int(np.ceil(n_samples / 320))
        config = transformers.WhisperConfig.from_pretrained(path)
        config.max_source_positions = frames
        state = encoder.state_dict()
        state["embed_positions.weight"] = state["embed_positions.weight"][:frames]
        short = WhisperEncoder(config).eval()
        short.load_state_dict(state)
        torch.set_num_threads(1)
        return lambda x: short(fe(list(x), sampling_rate=SR, return_tensors="pt",
                                  padding="max_length", max_length=frames * 320)
                               .input_features, output_hidden_states=True), None


def _best_of(fn, repeats):
    """Minimum wall time of ``repeats`` calls after one warm-up (the machine is shared)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_case(case, path, family, story_seconds, protocol_seconds, batch_size, repeats=2):
    import torch

    torch.set_num_threads(1)
    from sk_braintune.features.extractor import SpeechFeatureExtractor
    from sk_braintune.features.protocol import extract_story_features
    from sk_braintune.windows import make_windows

    audio = _audio(story_seconds)
    tr_times = np.arange(int(story_seconds / TR)) * TR + TR / 2
    windows = make_windows(audio, tr_times, window=WINDOW, tr=TR)
    if case == "extractor":
        ext = SpeechFeatureExtractor(path, pooling="mean", batch_size=batch_size, device="cpu")
        ext.fit(windows)
        elapsed = _best_of(lambda: ext.transform(windows), repeats)
        n_windows, story = len(windows), story_seconds
    elif case.startswith("hf"):
        peer, _ = _hf_peer(path, family, windows.window_samples, sliced=case == "hf_sliced")
        real = int(np.ceil(windows.window_samples / 320)) if family == "whisper" else None

        def loop():
            with torch.inference_mode():
                for _, batch in windows.batches(batch_size):
                    out = peer(batch)
                    torch.cat([h[:, :real].mean(dim=1) for h in out.hidden_states],
                              dim=1).numpy()

        elapsed = _best_of(loop, repeats)
        n_windows, story = len(windows), story_seconds
    elif case == "protocol":
        audio = _audio(protocol_seconds)
        tr_times = np.arange(max(2, int(protocol_seconds / TR))) * TR + TR / 2
        fitted = SpeechFeatureExtractor(path, device="cpu").fit(np.zeros((1, SR), np.float32))
        elapsed = _best_of(lambda: extract_story_features(
            fitted, audio, tr_times, window=WINDOW, step=0.1, trim=None, batch_size=batch_size,
            device="cpu"), repeats)
        n_windows, story = int(protocol_seconds / 0.1), protocol_seconds
    elif case.startswith("protocol_hf"):
        # the same 0.1 s windows through the bare loop (last frame)
        ends = np.arange(1, int(protocol_seconds / 0.1) + 1) * 0.1
        win = make_windows(_audio(protocol_seconds), ends, window=WINDOW, tr=0.0)
        peer, _ = _hf_peer(path, family, win.window_samples, sliced=case == "protocol_hf_sliced")
        real = int(np.ceil(win.window_samples / 320)) if family == "whisper" else None

        def loop():
            with torch.inference_mode():
                for _, batch in win.batches(batch_size):
                    out = peer(batch)
                    idx = (real or out.hidden_states[0].shape[1]) - 1
                    torch.cat([h[:, idx] for h in out.hidden_states], dim=1).numpy()

        elapsed = _best_of(loop, repeats)
        n_windows, story = len(win), protocol_seconds
    else:
        raise ValueError(case)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(case=case, family=family, seconds=elapsed, windows=n_windows,
                story_seconds_per_s=story / elapsed,
                window_audio_seconds_per_s=n_windows * WINDOW / elapsed, peak_rss_mb=peak_mb)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--story-seconds", type=float, default=20.0)
    parser.add_argument("--protocol-seconds", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--families", default="wav2vec2,whisper")
    parser.add_argument("--_case", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._case:
        case, path, family = args._case
        print(json.dumps(run_case(case, path, family, args.story_seconds,
                                  args.protocol_seconds, args.batch_size)))
        return
    from sk_braintune.testing.models import make_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            path = make_tiny_model(family, os.path.join(tmp, family), **CONFIGS[family])
            cases = ["extractor", "hf"] + (["hf_sliced"] if family == "whisper" else [])
            cases += ["protocol", "protocol_hf"]
            cases += ["protocol_hf_sliced"] if family == "whisper" else []
            for case in cases:
                cmd = [sys.executable, __file__, "--_case", case, path, family,
                       "--story-seconds", str(args.story_seconds),
                       "--protocol-seconds", str(args.protocol_seconds),
                       "--batch-size", str(args.batch_size)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    raise RuntimeError(f"case {case} failed:\n{out.stderr[-3000:]}")
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{family:9s} {case:19s} {row['seconds']:7.2f} s  {row['windows']:5d} "
                      f"windows  story {row['story_seconds_per_s']:6.2f} s/s  window audio "
                      f"{row['window_audio_seconds_per_s']:7.1f} s/s  peak RSS "
                      f"{row['peak_rss_mb']:6.0f} MB", flush=True)
    print()
    for family in args.families.split(","):
        by = {r["case"]: r for r in rows if r["family"] == family}
        peers = ["hf_sliced", "hf"] if family == "whisper" else ["hf"]
        for peer in peers:
            ratio = by["extractor"]["seconds"] / by[peer]["seconds"]
            print(f"{family}: per-TR extractor / {peer} loop = {ratio:.3f} "
                  f"({(ratio - 1) * 100:+.1f}% time)")
        for peer in ["protocol_hf_sliced", "protocol_hf"] if family == "whisper" else \
                ["protocol_hf"]:
            ratio = by["protocol"]["seconds"] / by[peer]["seconds"]
            print(f"{family}: protocol / {peer} loop = {ratio:.3f} ({(ratio - 1) * 100:+.1f}% "
                  "time, includes Lanczos + z-scoring)")
        per_tr = by["extractor"]["seconds"] / (args.story_seconds / TR)
        per_tr_protocol = by["protocol"]["seconds"] / (args.protocol_seconds / TR)
        print(f"{family}: seconds per TR: per-TR path {per_tr:.3f}, 0.1 s protocol "
              f"{per_tr_protocol:.3f} ({per_tr_protocol / per_tr:.0f}x)")


if __name__ == "__main__":
    main()
