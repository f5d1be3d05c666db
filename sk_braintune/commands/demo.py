"""``sk-braintune demo`` and ``sk-braintune dataset``: the study on the built-in story dataset.

``demo`` runs :func:`sk_braintune.study.run_braintuning_study` once per pretrained model family
(the self-supervised model made here and Whisper tiny.en by default) on the same dataset, prints
each stage and the results tables, and writes the results folder (tables, figures, manifest,
report). ``dataset`` makes (or loads from the cache) the demo's dataset and prints its summary.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from .. import study
from ..builtin.registry import model_label
from .brainmaps import study_brain_maps
from .results import (
    StageTimer,
    dataset_summary,
    format_results_table,
    peak_memory_mib,
    results_folder,
    save_config,
    save_figure,
    write_csv,
    write_results,
)
from ..study.settings import DemoSettings
from .settings import DatasetCommandSettings, DemoCommandSettings
from .terminal import show_library_messages

__all__ = ["run_demo", "run_dataset_summary", "DEMO_SUMMARY"]

MIN_ALIGNMENT_FOR_IMPACT = 0.05  # impact (A - A_resid) / A is not shown where A is below this


def _set_torch_threads(config):
    import torch

    threads = config.threads
    if threads:
        torch.set_num_threads(int(threads))


def run_dataset_summary(config, command_line=None):
    """``sk-braintune dataset``: generate (or load from the cache) and summarise the demo's dataset.

    Parameters
    ----------
    config : DatasetCommandSettings or dict
        Resolved command-line settings.
    command_line : list of str, optional
        Unused (the command writes no results folder); accepted like the other commands.
    """
    config = DatasetCommandSettings.from_mapping(config)
    show_library_messages(not config.quiet)
    settings = DemoSettings()
    data = study.study_dataset(settings, seed=config.seed, verbose=not config.quiet)
    dataset = settings.dataset.model_dump(exclude_none=True)
    print("Built-in story dataset (the demo's: "
          + ", ".join(f"{k}={v}" for k, v in dataset.items()) + ")")
    print(dataset_summary(data))


def run_demo(config, command_line=None):
    """``sk-braintune demo``: the full study on the built-in story dataset, for each model.

    Runs :func:`sk_braintune.study.run_braintuning_study` once per pretrained model of
    ``config.models`` (the self-supervised model made here and Whisper tiny.en by default) on
    the same dataset, printing each stage and the tables, and writes ``results.json``, ``results.csv`` (one row per model family and model),
    ``voxel_scores.npz``, ``config.toml``, ``manifest.json`` and ``report.html`` into
    ``config.output``, each family's figures into a subfolder named after it: the plots and
    the first listener's brain maps of the last layer (``brainmap_*.png``; an interactive
    ``brainmap_brain_tuned_minus_pretrained.html``), unless ``no_figures``.

    Parameters
    ----------
    config : DemoCommandSettings or dict
        Resolved command-line settings (``output``, ``quick``, ``seed``, ``device``, ``epochs``,
        ``models``, ``controls``, ``quiet``, ``no_figures``, ``threads``).
    command_line : list of str, optional
        The command as typed, for the manifest (default: ``sys.argv``).

    Returns
    -------
    results : dict
        ``families`` (model -> the study's results), ``table`` (rows with ``family`` and
        ``model``), ``stage_seconds``, ``wall_seconds``, ``peak_memory_mib``.
    """
    from .demo_report import write_demo_report
    from .report import utc_now, write_manifest

    config = DemoCommandSettings.from_mapping(config)
    started = utc_now()
    _set_torch_threads(config)
    output = Path(config.output)
    verbose = not config.quiet
    show_library_messages(verbose)
    stages = StageTimer()
    labels = [model_label(m) for m in config.models]
    print(f"sk_braintune demo: brain-tuning {' and '.join(labels)} on the built-in story "
          f"dataset ({'quick' if config.quick else 'full'} run), results in {output}/",
          flush=True)
    settings = config.study_settings()
    families, provenance, voxel_scores = {}, {}, {}
    # written as a transaction: into a temporary folder, moved to ``output`` when complete
    with results_folder(output) as folder:
        for model, label in zip(config.models, labels):
            settings.model = model
            stages.prefix = f"{label}: " if len(config.models) > 1 else ""
            print(f"\n== {label}", flush=True)
            result = _run_family(settings, config, stages, folder / _folder_name(label))

            def moved(path):  # a file's path once the folder is in place
                return None if path is None else str(output / Path(path).relative_to(folder))

            result["figures"] = [moved(f) for f in result.get("figures", [])]
            if "brain_maps" in result:
                result["brain_maps"] = [dict(m, figure=moved(m["figure"]),
                                             interactive=moved(m["interactive"]))
                                        for m in result["brain_maps"]]
            provenance[model] = result.pop("provenance", {})
            voxel_scores.update({f"{_folder_name(label)}__{k}": v
                                 for k, v in result.pop("voxel_scores").items()})
            mapped = _mapped_arrays(result.pop("voxel_maps", None))
            voxel_scores.update({f"{_folder_name(label)}__{k}": v for k, v in mapped.items()})
            families[model] = result
        stages.prefix = ""
        results = {"models": list(config.models), "families": families,
                   "table": [{"family": label, **row}
                             for model, label in zip(config.models, labels)
                             for row in families[model]["table"]],
                   "figures": [f for r in families.values() for f in r.get("figures", [])],
                   "voxel_scores": voxel_scores,
                   "stage_seconds": dict(stages.times),
                   "peak_memory_mib": peak_memory_mib(), "wall_seconds": stages.elapsed()}
        paths = write_results(results, folder)
        second = [{"family": label, **row} for label, family in zip(labels, families.values())
                  for row in _second_table(family)]
        if second:
            paths.append(str(write_csv(second, folder / "significance.csv")))
        save_config(config, folder)
        manifest = _demo_manifest(config, settings, provenance, results, started, command_line)
        paths.append(str(write_manifest(manifest, folder)))
        paths.append(str(write_demo_report(
            folder, results, labels, output=output, quick=config.quick, manifest=manifest,
            table_note=DEMO_SUMMARY, second_note=SECOND_TABLE_NOTE,
            second_table="significance.csv" if second else None)))
    paths = [str(output / Path(p).relative_to(folder)) for p in paths]
    _print_demo_tables(results, labels)
    print(f"wall time {results['wall_seconds']:.0f} s, peak memory "
          f"{results['peak_memory_mib']:.0f} MiB; wrote {', '.join(paths)}"
          + (f" and {len(results['figures'])} figures" if results["figures"] else ""))
    return results


DEMO_SUMMARY = ("Held-out story, mean over the simulated listeners. sem/aud/mix: "
                "noise-ceiling-normalised r in semantic, auditory and mixed voxels (last layer / "
                "best layer); lowlevel_*_%: low-level impact on the last layer's alignment; "
                "probe: spoken-intent accuracy on unseen paraphrases; sem_pref: synonyms minus "
                "near-homophones (last layer).")


SECOND_TABLE_NOTE = ("Second estimate and significance (last layer). unique/shared: variance "
                     "partitioning R^2 vs low-level features, shared_%: shared / (unique + "
                     "shared); sig: voxels with q < 0.05 (block permutation, BH-FDR); ci: 95% "
                     "block-bootstrap interval of the mean normalised r.")


def _folder_name(label):
    return "".join(c if c.isalnum() or c in "-." else "_" for c in label).strip("_")


def _run_family(settings, config, stages, folder):
    """One model family: its dataset (summary printed), the study, then its figures."""
    verbose = not config.quiet
    with stages("dataset: espeak-ng stories, simulated responses"):
        data = study.study_dataset(settings, seed=config.seed, verbose=verbose)
    print(dataset_summary(data), flush=True)
    result = study.run_braintuning_study(settings, data=data, seed=config.seed,
                                         device=config.device, verbose=verbose, stages=stages)
    if not config.no_figures:
        with stages("figures"):
            result["figures"] = _write_figures(result, folder, model_label(settings.model))
        with stages("brain maps: the first listener's last layer"):
            result["brain_maps"] = study_brain_maps(result, folder,
                                                    min_ceiling=settings.min_ceiling)
            result["figures"] += [m["figure"] for m in result["brain_maps"]]
    result["stage_seconds"] = dict(stages.times)
    return result


def _mapped_arrays(voxel_maps):
    """The arrays the brain maps draw (first listener), for ``voxel_scores.npz``."""
    if not voxel_maps:
        return {}
    participant, own = next(iter(voxel_maps.items()))
    arrays = {f"{participant}_{name}_last_layer": values
              for name, values in own["voxel_scores"].items()}
    if own.get("column_index") is not None:
        arrays[f"{participant}_column_index"] = np.asarray(own["column_index"])
    return arrays


def _demo_manifest(config, settings, provenance, results, started, command_line):
    from .report import build_manifest

    first = next(iter(provenance.values()))
    seed = config.seed
    return build_manifest(
        "demo", {"command": config, "study": settings}, started=started,
        command_line=command_line,
        seeds={"dataset": seed, "tuning": seed, "controls": seed, "probe": seed},
        split=first.get("split"), voxels=first.get("voxels"), data=first.get("data"),
        models={f"{model}/{name}": fingerprint for model, p in provenance.items()
                for name, fingerprint in p.get("models", {}).items()},
        extra={"stage_seconds": results["stage_seconds"],
               "peak_memory_mib": results["peak_memory_mib"]})


def _print_demo_tables(results, labels):
    chance = next(iter(results["families"].values())).get("probe", {}).get("chance")
    print()
    # the report's summary, with the probe's chance level, wrapped for the terminal
    print(textwrap.fill(DEMO_SUMMARY.replace(
        "unseen paraphrases;", f"unseen paraphrases (chance {chance or float('nan'):.3f});"),
        width=99))
    for label, family in zip(labels, results["families"].values()):
        print(f"\n{label}")
        print(format_results_table(family["table"]))
    seconds = [_second_table(family) for family in results["families"].values()]
    if any(seconds):
        print()
        print(textwrap.fill(SECOND_TABLE_NOTE, width=99))
        for label, second in zip(labels, seconds):
            if second:
                print(f"\n{label}")
                print(format_results_table(second))
    print()


def _second_table(results):
    """Rows of the demo's second table: variance partitioning and significance per model."""
    rows = []
    for name in results["models"]:
        partitions = results.get("variance_partitioning", {}).get(name, {})
        significance = results.get("significance", {}).get(name, {})
        if not partitions and not significance:
            continue
        row = {"model": name}
        for roi in ("semantic", "auditory"):
            if roi in partitions:
                row[f"{roi[:3]}_unique"] = partitions[roi]["unique_model"]
                row[f"{roi[:3]}_shared"] = partitions[roi]["shared"]
                row[f"{roi[:3]}_shared_%"] = 100 * partitions[roi]["shared_fraction"]
        for roi in ("semantic", "auditory"):
            if roi in significance:
                entry = significance[roi]
                # a mean over listeners with several
                row[f"{roi[:3]}_sig"] = f"{entry['n_significant']:.4g}/{entry['n_voxels']:.0f}"
                row[f"{roi[:3]}_ci"] = f"[{entry['low']:.2f}, {entry['high']:.2f}]"
        rows.append(row)
    return rows


def _write_figures(results, output, label=""):
    """Write the study's figures into ``output``; return their paths.

    Alignment per layer, low-level impact, probe, semantic preference and each tuned model's
    training curves; each title opens with the model family's ``label`` (the families' figures
    are otherwise alike).
    """
    from ..analysis import figures as fig

    output.mkdir(parents=True, exist_ok=True)
    written = []

    def save(figure, name):
        written.append(str(save_figure(figure, output / name, dpi=120, bbox_inches="tight")))

    family = f"{label}: " if label else ""
    for roi in ("semantic", "auditory"):
        save(fig.plot_layer_alignment({m: results["layers"][m][roi]
                                       for m in results["models"]},
                                      title=f"{family}{roi} voxels"), f"alignment_{roi}.png")
    import pandas as pd

    if "low_level_impact" in results:
        # (A - A_resid) / A is noise where A is near 0 (the noise voxels): leave those out
        impacts = {m: pd.Series({roi: v["impact_percent"] for roi, v in table.items()
                                 if v["A"] >= MIN_ALIGNMENT_FOR_IMPACT})
                   for m, table in results["low_level_impact"].items()}
        save(fig.plot_low_level_impact(impacts, title=f"{family}Low-level impact on brain "
                                       "alignment"), "low_level_impact.png")
    if "probe" in results:
        tables = {m: pd.DataFrame({"layer": list(results["probe"][m]),
                                   "score": list(results["probe"][m].values())})
                  for m in results["models"]}
        save(fig.plot_probe_scores(tables, chance=results["probe"].get("chance"),
                                   title=f"{family}Spoken-intent probe (held-out "
                                         "paraphrases)"),
             "probe_scores.png")
    if "semantic_preference" in results:
        tables = {m: pd.DataFrame(v) for m, v in results["semantic_preference"].items()}
        save(fig.plot_semantic_preference(tables, title=f"{family}Semantic preference "
                                          "(synonyms - near-homophones)"),
             "semantic_preference.png")
    for name, history in results["history"].items():
        save(fig.plot_training_curves(history, title=f"{family}{name}"),
             f"training_{name.replace(' ', '_')}.png")
    return written
