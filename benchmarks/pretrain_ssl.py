"""Pretrain the packaged self-supervised speech model (``sk_braintune/data/ssl_model``).

Runs :data:`sk_braintune.builtin.SSL_RECIPE` (seed 0) with
:func:`sk_braintune.builtin.pretrain_ssl_speech_model` on the story library's training speech
(the validation and test stories excluded), exactly as ``load_ssl_speech_model(packaged=False)``
would, then writes the encoder in float16 with :func:`sk_braintune.builtin.ssl.package_ssl_model`
and prints the SHA-256 of the weights, the pretraining time and the seconds per step.

``--check`` writes nothing into the package: it compares the SHA-256 of the result with the one
recorded in the packaged ``ssl_model.json`` and exits with status 1 when they differ. The
recipe is deterministic on one machine and one torch build (seeded weights, quantiser, crops and
masks; ``tests/test_ssl_packaged.py`` checks it at a tiny size); other CPUs or BLAS builds may
round differently and give different bytes.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/pretrain_ssl.py [--check] [--threads 1]
        [--output-dir sk_braintune/data/ssl_model] [--work-dir DIR]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=None,
                        help="where the packaged files go (default: the package's data folder)")
    parser.add_argument("--work-dir", default=None,
                        help="keep the whole pretrained WhisperModel directory here")
    parser.add_argument("--check", action="store_true",
                        help="compare with the packaged weights instead of replacing them")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()

    import torch

    from sk_braintune.builtin.story import story_speech
    from sk_braintune.builtin.ssl import (
        PACKAGED_DIR,
        SSL_RECIPE,
        package_ssl_model,
        packaged_ssl_model,
        pretrain_ssl_speech_model,
    )

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    speech, digest = story_speech(stories="library", split="train", verbose=True)
    speech_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work_dir) if args.work_dir else Path(scratch) / "model"
        history = pretrain_ssl_speech_model([s.audio for s in speech.values()], work,
                                            random_state=0, verbose=True, **SSL_RECIPE)
        if args.check:
            output = Path(scratch) / "package"
        else:
            output = Path(args.output_dir) if args.output_dir else PACKAGED_DIR
        metadata = package_ssl_model(work, output, texts_digest=digest)
    summary = {"sha256": metadata["sha256"], "weights_bytes": metadata["weights_bytes"],
               "speech_s": round(speech_s, 1), "pretraining_s": history["seconds"],
               "seconds_per_step": history["seconds_per_step"],
               "n_steps": history["recipe"]["n_steps"], "torch_threads": history["torch_threads"],
               "final_loss_20": sum(history["losses"][-20:]) / max(1, len(history["losses"][-20:]))}
    print(json.dumps(summary, indent=1))
    if args.check:
        shipped = packaged_ssl_model()
        expected = shipped["sha256"] if shipped else None
        same = expected == metadata["sha256"]
        print(f"packaged SHA-256 {expected}: {'reproduced' if same else 'DIFFERENT'}")
        sys.exit(0 if same else 1)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
