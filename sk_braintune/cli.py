"""Command line: ``sk-braintune demo | tune | evaluate | dataset``.

Every option can also come from a TOML config file (``--config run.toml``; command-line flags win).
The resolved configuration is written beside the results so that a run can be repeated with
``--config <output>/config.toml``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path

DEFAULT_OUTPUT = "sk_braintune_results"


def _add_common(parser):
    parser.add_argument("--config", type=Path, help="TOML file holding any of these options "
                        "(keys as the long option names, with underscores).")
    parser.add_argument("--output", "-o", type=Path, help="directory for results, figures and the "
                        f"resolved config (default: ./{DEFAULT_OUTPUT})")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--device", help="torch device: auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int,
                        help="torch/BLAS threads (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_real_data(parser):
    parser.add_argument("--root", type=Path, help="local copy of OpenNeuro ds003020 "
                        "(holds derivative/preprocessed_data, stimuli, derivative/TextGrids)")
    parser.add_argument("--subject", help="participant, e.g. UTS03")
    parser.add_argument("--model", help="Hugging Face model name or local directory")
    parser.add_argument("--stories", nargs="+", help="stories to load (default: all the "
                        "participant has)")
    parser.add_argument("--window", type=float, help="audio window per TR in seconds")
    parser.add_argument("--batch-size", type=int, help="windows per batch")


def build_parser():
    """Build the argument parser.

    Returns
    -------
    parser : argparse.ArgumentParser
    """
    from .study import CONTROL_MODELS

    parser = argparse.ArgumentParser(
        prog="sk-braintune",
        description="Brain-tuning of speech models on fMRI (Moussa, Klakow & Toneva, ICLR 2025).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="run the full brain-tuning study on the built-in story dataset",
        description=(
            "Run the whole study on the built-in simulated story dataset (real espeak-ng speech, "
            "a MiniLM-driven semantic 'brain', the real Whisper tiny.en as pretrained model): "
            "brain-tune the model, tune a random-fMRI control, then compare pretrained, "
            "brain-tuned and control on held-out alignment (noise-ceiling-normalised, per voxel "
            "kind and layer), low-level impact, a semantic probe and semantic preference. "
            "Prints one table and writes figures, results.json and results.csv."),
    )
    _add_common(demo)
    demo.add_argument("--quick", action="store_true",
                      help="smaller run (a couple of minutes) for smoke tests")
    demo.add_argument("--epochs", type=int, help="tuning epochs (default: the study's)")
    demo.add_argument("--controls", nargs="+", choices=tuple(CONTROL_MODELS),
                      help="random-fMRI controls to tune (default: block-permuted); "
                           "other-story gives each story another story's responses")
    demo.add_argument("--no-figures", action="store_true", help="skip the figures")

    tune = sub.add_parser(
        "tune", help="brain-tune a model on one ds003020 participant",
        description="Fine-tune a speech model on a participant's ds003020 responses with the "
                    "paper's defaults; writes the tuned backbone (save_pretrained), history and "
                    "training curves to --output.")
    _add_common(tune)
    _add_real_data(tune)
    tune.add_argument("--epochs", type=int, help="maximum epochs (default 30)")
    tune.add_argument("--lr-backbone", type=float, help="backbone learning rate (default 5e-5)")
    tune.add_argument("--lr-head", type=float, help="head learning rate (default 1e-4)")
    tune.add_argument("--min-ceiling", type=float,
                      help="keep voxels whose noise ceiling exceeds this (default 0.4)")

    evaluate = sub.add_parser(
        "evaluate", help="layer-wise alignment and low-level impact of a model on ds003020",
        description="Extract per-layer features, fit voxelwise ridge encoding models on the "
                    "training stories and score the test story (noise-ceiling-normalised r per "
                    "layer and ROI); also the low-level impact. Writes tables and figures.")
    _add_common(evaluate)
    _add_real_data(evaluate)
    evaluate.add_argument("--layers", help='"all" (default) or comma-separated indices')

    dataset = sub.add_parser("dataset", help="generate the built-in story dataset and summarise it")
    _add_common(dataset)
    return parser


_DEFAULTS = {"output": DEFAULT_OUTPUT, "seed": 0, "device": "auto", "quiet": False}


def resolve_config(args):
    """Merge defaults, the TOML config file and the command-line flags (flags win).

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    config : dict
    """
    config = dict(_DEFAULTS)
    if getattr(args, "config", None) is not None:
        path = Path(args.config)
        if not path.is_file():
            raise SystemExit(f"sk-braintune: config file {path} does not exist")
        with open(path, "rb") as f:
            loaded = tomllib.load(f)
        valid = {k for k in vars(args)} - {"command", "config"}
        unknown = sorted(set(loaded) - valid)
        if unknown:
            raise SystemExit(f"sk-braintune: unknown keys in {path}: {unknown}; "
                             f"valid keys: {sorted(valid)}")
        config.update(loaded)
    for key, value in vars(args).items():
        if key in ("command", "config"):
            continue
        if value is not None and value is not False:
            config[key] = value
        else:
            config.setdefault(key, value)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()}
    return config


def _configure_threads(config):
    threads = config.get("threads")
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)


def main(argv=None):
    """Entry point of the ``sk-braintune`` console script.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        Process exit status.
    """
    args = build_parser().parse_args(argv)
    config = resolve_config(args)
    _configure_threads(config)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from . import realdata, study

    runner = {"demo": study.run_demo, "tune": realdata.run_tune,
              "evaluate": realdata.run_evaluate,
              "dataset": study.run_dataset_summary}[args.command]
    try:
        runner(config)
    except study.StudyInputError as exc:
        print(f"sk-braintune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
