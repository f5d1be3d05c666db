"""Command line: ``sk-braintune demo | tune | evaluate | dataset | compare``.

Every option can also come from a TOML config file (``--config run.toml``; command-line flags win).
Options, their types, allowed values, defaults and help lines come from the pydantic settings of
:mod:`sk_braintune.commands.settings`, the same the library uses; a wrong key or value ends the
command with a one-line message and exit status 2. The resolved configuration is written beside the
results so that a run can be repeated with ``--config <output>/config.toml``; ``manifest.json``
and ``report.html`` describe the run (``sk-braintune compare A B`` lists where two runs differ).
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path

from .._settings import option_specs
from ..exceptions import SettingsError, StudyInputError
from .settings import COMMAND_SETTINGS, DEFAULT_OUTPUT

__all__ = ["build_parser", "resolve_config", "main", "DEFAULT_OUTPUT"]

_CONVERTERS = {int: int, float: float, str: str, Path: Path}


def _default_text(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _add_settings_options(parser, settings_cls):
    """One long option per command-line field of ``settings_cls``, help and default from it
    (the field's description, choices and default).

    argparse's own default is ``SUPPRESS``: the namespace holds only the flags given, so that
    flags win over the ``--config`` file and the file over the settings' defaults.
    """
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="TOML file holding any of these options (keys as the long option "
                             "names, with underscores); command-line flags win")
    defaults = settings_cls()
    for name, spec in option_specs(settings_cls).items():
        if not spec.command_line or spec.is_table:
            continue
        flags = ["--" + name.replace("_", "-"), *spec.flags]
        default = _default_text(getattr(defaults, name))
        help_text = spec.description + (f" (default: {default})" if default else "")
        if spec.kind is bool:
            parser.add_argument(*flags, action="store_true", default=argparse.SUPPRESS,
                                help=help_text)
            continue
        parser.add_argument(*flags, type=_CONVERTERS[spec.kind], default=argparse.SUPPRESS,
                            nargs="+" if spec.many else None,
                            choices=spec.choices, help=help_text,
                            metavar=name.upper() if spec.choices is None else None)


def build_parser():
    """Build the argument parser (options and defaults from :mod:`sk_braintune.commands.settings`).

    Returns
    -------
    parser : argparse.ArgumentParser
        The ``sk-braintune`` parser with its ``demo``, ``tune``, ``evaluate`` and ``dataset``
        subcommands.
    """
    parser = argparse.ArgumentParser(
        prog="sk-braintune",
        description="Brain-tuning of speech models on fMRI (Moussa, Klakow & Toneva, ICLR 2025).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="run the full brain-tuning study on the built-in story dataset",
        description=(
            "Run the whole study on the built-in simulated story dataset (real espeak-ng speech "
            "of the story library, three simulated listeners with a MiniLM-driven semantic "
            "'brain') for each pretrained model (--models: the self-supervised model made here "
            "and the real Whisper tiny.en): brain-tune the model on all listeners, tune a "
            "random-fMRI control, then compare pretrained, brain-tuned and control on held-out "
            "alignment (noise-ceiling-normalised, per voxel kind and layer, each listener), "
            "low-level impact, a semantic probe and semantic preference. Prints one table per "
            "model and writes figures, results.json, results.csv, manifest.json and "
            "report.html."),
    )
    _add_settings_options(demo, COMMAND_SETTINGS["demo"])

    tune = sub.add_parser(
        "tune", help="brain-tune a model on one or several participants of a real dataset",
        description="Fine-tune a speech model on fMRI responses (--dataset: ds003020, the "
                    "default, Narratives, Le Petit Prince or any BIDS dataset) with the paper's "
                    "defaults; "
                    "several --subject values tune one model on all of them (one shared head "
                    "over the common voxel space). Writes the tuned backbone "
                    "(save_pretrained), history, training curves, manifest and report to "
                    "--output.")
    _add_settings_options(tune, COMMAND_SETTINGS["tune"])

    evaluate = sub.add_parser(
        "evaluate", help="layer-wise alignment and low-level impact of a model on a real dataset",
        description="Extract per-layer features, fit voxelwise ridge encoding models on the "
                    "training stories and score the test story (noise-ceiling-normalised r per "
                    "layer and ROI) for each --subject; also the low-level impact. Writes a "
                    "per-participant table, an ROI summary, figures, manifest and report.")
    _add_settings_options(evaluate, COMMAND_SETTINGS["evaluate"])

    dataset = sub.add_parser("dataset", help="generate the built-in story dataset and summarise it")
    _add_settings_options(dataset, COMMAND_SETTINGS["dataset"])

    compare = sub.add_parser(
        "compare", help="where two results folders differ (their manifest.json files)",
        description="Compare the manifests of two results folders: versions, settings, seeds, "
                    "story split, voxel selection, data and model fingerprints (times and "
                    "command lines left out). A folder whose files do not match the SHA-256 "
                    "its manifest lists (changed, missing or extra files; a run that did not "
                    "finish) is refused. Exit status 0 when they agree, 1 when they differ, "
                    "2 for a missing or refused folder.")
    compare.add_argument("first", type=Path, help="results folder or manifest.json")
    compare.add_argument("second", type=Path, help="results folder or manifest.json")

    mappers = sub.add_parser(
        "mappers", help="build a ds003020 subject's flatmap mapper once (needs pycortex)",
        description="Build, with pycortex (pip install 'sk-braintune[maps]'), a subject's "
                    "sparse voxel-to-flatmap matrix and flatmap mask from the dataset's own "
                    "pycortex database (<root>/derivative/pycortex-db/<subject>/), plus a "
                    "voxel-to-fsaverage5 matrix when --sphere-reg is given, and save them as "
                    "one .npz; plot_brain_map(values, space=load_mapper(path)) then draws "
                    "flatmaps without pycortex.")
    mappers.add_argument("--root", type=Path, required=True, help="ds003020 root folder")
    mappers.add_argument("--subject", required=True, help="e.g. UTS03")
    mappers.add_argument("--output", type=Path, default=None,
                         help="the .npz to write (default: <subject>_mapper.npz)")
    mappers.add_argument("--xfm", default=None, help="pycortex transform (<subject>_auto)")
    mappers.add_argument("--height", type=int, default=1024, help="flatmap height in pixels")
    mappers.add_argument("--sphere-reg", type=Path, default=None,
                         help="FreeSurfer surf folder with lh/rh.sphere.reg (adds fsaverage5)")
    return parser


def _mappers(args):
    from ..plotting.mapper import build_mapper

    output = args.output or Path(f"{args.subject}_mapper.npz")
    try:
        mapper = build_mapper(args.root / "derivative" / "pycortex-db", args.subject,
                              xfm=args.xfm, height=args.height, sphere_reg=args.sphere_reg)
    except (ImportError, FileNotFoundError, ValueError) as exc:
        print(f"sk-braintune mappers: error: {exc}", file=sys.stderr)
        return 2
    mapper.save(output)
    print(f"{args.subject}: {mapper.n_voxels} voxels ({mapper.mask_name} mask of {mapper.xfm}) "
          f"-> {int(mapper.flatmap_mask.sum())} flatmap pixels"
          f"{', fsaverage5' if mapper.voxel_to_fsaverage5 is not None else ''}; "
          f"wrote {output}")
    return 0


def _compare(args):
    from .report import compare_manifests, read_manifest

    try:  # a folder whose files are not those of its manifest is refused, not compared
        first = read_manifest(args.first, check=True)
        second = read_manifest(args.second, check=True)
    except (FileNotFoundError, ValueError) as exc:
        print(f"sk-braintune compare: error: {exc}", file=sys.stderr)
        return 2
    differences = compare_manifests(first, second)
    for key, a, b in differences:
        print(f"{key}: {a!r} != {b!r}")
    print(f"{len(differences)} difference(s) between {args.first} and {args.second}"
          if differences else f"{args.first} and {args.second} agree")
    return 1 if differences else 0


def read_config_file(path):
    """Read a ``--config`` TOML file.

    Parameters
    ----------
    path : str or pathlib.Path

    Returns
    -------
    values : dict

    Raises
    ------
    SettingsError
        When the file does not exist or is not valid TOML.
    """
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"config file {path} does not exist")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None


def resolve_config(args):
    """Merge the settings' defaults, the TOML config file and the command-line flags.

    Flags win over the file, the file over the defaults; every value is checked.

    Parameters
    ----------
    args : argparse.Namespace
        From :func:`build_parser` (holds only the flags given, plus ``command``).

    Returns
    -------
    settings : DemoCommandSettings, DatasetCommandSettings, TuneSettings or EvaluateSettings
        The command's settings.

    Raises
    ------
    SettingsError
        For an unknown key, a value of the wrong type or a missing config file.
    """
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    values = {}
    source = None
    if getattr(args, "config", None) is not None:
        source = str(args.config)
        values.update(read_config_file(args.config))
    settings_cls = COMMAND_SETTINGS[args.command]
    settings = settings_cls.from_mapping(values, source=source).with_overrides(flags)
    if hasattr(settings, "study_settings"):  # the demo's [study] table, checked now
        try:
            settings.study_settings()
        except SettingsError as exc:
            raise SettingsError(f"{source}: {exc}" if source else str(exc)) from None
    return settings


def _configure_threads(config):
    if config.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(config.threads)


def main(argv=None):
    """Entry point of the ``sk-braintune`` console script.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        Process exit status: 0 on success, 2 for bad input (a one-line message on stderr);
        ``compare`` returns 1 when the two results differ.
    """
    args = build_parser().parse_args(argv)
    if args.command == "compare":
        return _compare(args)
    if args.command == "mappers":
        return _mappers(args)
    try:
        config = resolve_config(args)
    except SettingsError as exc:
        print(f"sk-braintune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    command_line = ["sk-braintune", *(sys.argv[1:] if argv is None else argv)]
    _configure_threads(config)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from . import demo, evaluate, tune

    runner = {"demo": demo.run_demo, "tune": tune.run_tune, "evaluate": evaluate.run_evaluate,
              "dataset": demo.run_dataset_summary}[args.command]
    try:
        runner(config, command_line=command_line)
    except StudyInputError as exc:
        print(f"sk-braintune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
