"""The data-scaling curve: held-out alignment against minutes of tuning data (library stories).

The follow-up paper's data-efficiency question on the design of the pre-registered semantic
study (``docs/semantic_design.rst``: library stories, semantic voxels on 20 words of context,
one listener, the demo's tuning settings): for each amount of training audio (``--minutes``,
whole stories in the library's order; 0 means all of them) and each seed (rotating held-out
stories, :func:`study_braintuning.held_out_stories`), tune the pretrained model's top block on
those stories, tune the random-fMRI control (15-TR block permutation) the same way, and score
pretrained, brain-tuned and control last-layer features on the held-out story. Every run also
fits the ridge on the first 3, 6, 12 and 24 fitting stories and on all of them (the
encoding-data curve, ``DemoSettings.encoding_curve``). The learnability bounds of the same seeds
and sizes (oracle semantic features and the lexicon learned from the training stories, from
``benchmarks/results/semantic_learnability_library.json``) go on the same axes.

Usage::

    python benchmarks/data_scaling.py --minutes 15 30 60 120 0 --seeds 0 1 2 [--model ssl]
        [--from-study DIR] --output benchmarks/results/data_scaling_ssl.json
    python benchmarks/data_scaling.py --summarize --output benchmarks/results/data_scaling_ssl.json

Runs are kept one JSON row per (size, seed) next to ``--output`` (``<output stem>_runs/``), so
a run can stop and go on, and several processes can share the grid (one torch thread each uses
two cores best). ``--from-study DIR`` takes the rows of a size the pre-registered study
(``study_braintuning.py --preregistered``) already ran with the same settings, instead of
tuning again. ``--figure`` writes the figure (default: next to ``--output``): the scaling curve
per voxel kind on top, their paired differences in the middle, the encoding-data curve of the
largest size below. The same numbers print as reStructuredText tables (``--tables FILE`` keeps
them, as the docs do).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_braintuning (this folder)

from study_braintuning import held_out_stories  # noqa: E402

ROIS = ("semantic", "auditory")
MODELS = ("pretrained", "brain-tuned", "random-fMRI")
LEARNABILITY = Path(__file__).resolve().parent / "results" / "semantic_learnability_library.json"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[15, 30, 60, 120, 0],
                        help="minutes of training audio (0: all the library's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="ssl", help="ssl, whisper-tiny.en or a directory")
    parser.add_argument("--context-words", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--from-study", type=Path,
                        help="folder of study_braintuning.py --preregistered rows to reuse")
    parser.add_argument("--output", type=Path,
                        default=Path("benchmarks/results/data_scaling_ssl.json"))
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--tables", type=Path,
                        help="also write the printed tables (reStructuredText) to this file")
    parser.add_argument("--summarize", action="store_true",
                        help="only gather the rows already run, write the JSON and figure")
    args = parser.parse_args()
    runs = args.output.parent / f"{args.output.stem}_runs"
    runs.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        for minutes in args.minutes:
            for seed in args.seeds:
                path = runs / f"minutes{minutes:g}_seed{seed}.json"
                if not path.exists():
                    row = (study_row(args, minutes, seed) if args.from_study else None) or \
                        run_one(args, minutes, seed)
                    path.write_text(json.dumps(row, indent=2))
    rows = [json.loads(p.read_text()) for p in sorted(runs.glob("minutes*_seed*.json"))]
    rows = [r for r in rows if r["model"] == args.model]
    summary = summarize(rows)
    args.output.write_text(json.dumps({"settings": {"model": args.model,
                                                    "context_words": args.context_words},
                                       "rows": rows, "summary": summary}, indent=2))
    bounds = learnability_bounds(args.context_words)
    text = tables(summary, bounds)
    print(text)
    if args.tables:
        args.tables.write_text(text)
    figure = plot_scaling(summary, bounds)
    path = args.figure or args.output.with_suffix(".png")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    print(f"wrote {args.output} and {path}")


def settings_for(args, minutes, seed):
    """The pre-registered design at this size and seed, with the block-permuted control."""
    from sk_braintune import study

    return study.demo_settings(
        model=args.model, controls=("block-permuted",),
        dataset={"stories": "library", "minutes": minutes or None,
                 "context_words": args.context_words, "n_participants": 1,
                 **held_out_stories(seed, stories="library")})


def row_from_results(results, args, minutes, seed, seconds):
    """The per-(size, seed) row: last-layer alignment and the encoding-data curve per model."""
    row = {"model": args.model, "minutes": minutes, "seed": seed, "seconds": seconds,
           "train_minutes": results.get("train_minutes"),
           "test_story": held_out_stories(seed, stories="library")["test_story"]}
    for name in MODELS:
        for roi in ROIS:
            row[f"{name}/{roi}"] = float(results["layers"][name][roi][-1])
            for n, value in results.get("encoding_curve", {}).get(name, {}).get(roi, {}).items():
                row[f"{name}/{roi}_ridge_on_{n}_stories"] = float(value)
    return row


def run_one(args, minutes, seed):
    from sk_braintune import study

    settings = settings_for(args, minutes, seed)
    t0 = time.perf_counter()
    results = study.run_braintuning_study(settings, seed=seed, verbose=False,
                                          analyses=("alignment", "encoding_curve"))
    row = row_from_results(results, args, minutes, seed, time.perf_counter() - t0)
    print(json.dumps({k: v for k, v in row.items() if "ridge_on" not in k}), flush=True)
    return row


def study_row(args, minutes, seed):
    """The row of a pre-registered study run with the same settings, or None."""
    path = args.from_study / f"seed{seed}.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    settings = results["settings"]
    if isinstance(settings, str):  # rows written before the study script kept the dict
        wanted = (f"model='{args.model}'", "stories='library'", f"minutes={float(minutes)}",
                  f"context_words={args.context_words}", "controls=('block-permuted'")
        if not all(text in settings for text in wanted):
            return None
    elif (settings["model"] != args.model or settings["dataset"]["stories"] != "library"
          or float(settings["dataset"]["minutes"] or 0) != float(minutes)
          or settings["dataset"]["context_words"] != args.context_words):
        return None
    return row_from_results(results, args, minutes, seed, None)


def summarize(rows):
    """Means and standard errors across seeds, per size, model and voxel kind."""
    from scipy import stats

    out = {}
    for minutes in sorted({r["minutes"] for r in rows}, key=lambda m: m or np.inf):
        same = [r for r in rows if r["minutes"] == minutes]
        entry = {"n_seeds": len(same), "seeds": [r["seed"] for r in same]}
        keys = [k for k in same[0] if "/" in k and all(k in r for r in same)]
        for key in keys:
            values = np.array([r[key] for r in same])
            entry[key] = {"mean": float(values.mean()),
                          "sem": float(values.std(ddof=1) / np.sqrt(len(values)))
                          if len(values) > 1 else float("nan")}
        # the full ridge, then the encoding-data curve's points (the ridge on the first k stories)
        measures = list(ROIS) + sorted(
            {k.split("/", 1)[1] for k in keys if "_ridge_on_" in k},
            key=lambda name: (name.split("_")[0], story_count(name)))
        for measure in measures:
            for other in MODELS[::2]:
                if not all(f"{other}/{measure}" in r and f"brain-tuned/{measure}" in r
                           for r in same):
                    continue
                diff = np.array([r[f"brain-tuned/{measure}"] - r[f"{other}/{measure}"]
                                 for r in same])
                test = {"mean_difference": float(diff.mean()), "differences": diff.tolist()}
                if len(diff) > 1 and np.any(diff != 0):
                    test["paired_t_p"] = float(stats.ttest_1samp(diff, 0).pvalue)
                entry[f"brain-tuned - {other}, {measure}"] = test
        out[f"{minutes:g}"] = entry
    return out


def story_count(key):
    """The k of an encoding-data-curve key such as ``"brain-tuned/semantic_ridge_on_6_stories"``."""
    return int(key.split("_on_")[1].split("_")[0])


def real_minutes(summary, bounds):
    """Training minutes per size key: whole stories, so those the learnability grid measured."""
    return {size: bounds.get(float(size), {}).get("train_minutes", float(size) or 207.0)
            for size in summary}


def _rst(header, lines):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    rule = "  ".join("=" * w for w in widths)
    def row(cells):
        return "  ".join(f"{cell!s:<{w}}" for cell, w in zip(cells, widths)).rstrip()
    return "\n".join([rule, row(header), rule, *map(row, lines), rule])


def _difference(test):
    text = f"{test['mean_difference']:+.4f}"
    return text + (f" (p={test['paired_t_p']:.2g})" if "paired_t_p" in test else "")


def tables(summary, bounds):
    """The scaling curve per voxel kind and the largest size's encoding-data curve, as RST."""
    x_of = real_minutes(summary, bounds)
    out = []
    header = ["minutes", "seeds", *MODELS, "BT - pretrained", "BT - random-fMRI"]
    for roi in ROIS:
        lines = [[f"{x_of[size]:.0f}", entry["n_seeds"],
                  *(f"{entry[f'{name}/{roi}']['mean']:.3f}" for name in MODELS),
                  *(_difference(entry[f"brain-tuned - {other}, {roi}"])
                    for other in MODELS[::2])]
                 for size, entry in summary.items()]
        out += [f"**{roi} voxels, last layer, held-out story**", "", _rst(header, lines), ""]
    largest = list(summary)[-1]
    entry = summary[largest]
    for roi in ROIS:
        counts = sorted({story_count(k) for k in entry
                         if k.startswith(f"pretrained/{roi}_ridge_on_")})
        lines = [[count, entry["n_seeds"],
                  *(f"{entry[f'{name}/{roi}_ridge_on_{count}_stories']['mean']:.3f}"
                    for name in MODELS),
                  *(_difference(entry[f"brain-tuned - {other}, {roi}_ridge_on_{count}_stories"])
                    for other in MODELS[::2])]
                 for count in counts]
        out += [f"**{roi} voxels, encoding ridge on the first k stories, tuned on "
                f"{x_of[largest]:.0f} minutes**", "", _rst(["stories", *header[1:]], lines), ""]
    return "\n".join(out)


def learnability_bounds(context_words):
    """Oracle and learned-here semantic alignment per size (means over the seeds run there)."""
    if not LEARNABILITY.exists():
        return {}
    rows = [r for r in json.loads(LEARNABILITY.read_text())["rows"]
            if r["context_words"] == context_words]
    bounds = {}
    for size in sorted({r["size"] for r in rows}):
        same = [r for r in rows if r["size"] == size]
        bounds[size] = {"train_minutes": float(np.mean([r["train_minutes"] for r in same])),
                        **{name: float(np.mean([r["semantic"][name] for r in same]))
                           for name in ("true semantic features", "lexicon learned here")}}
    return bounds


def plot_scaling(summary, bounds):
    """Held-out alignment against minutes of tuning data, one panel per voxel kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(summary)
    x_of = real_minutes(summary, bounds)
    fig, axes = plt.subplots(3, len(ROIS), figsize=(5.2 * len(ROIS), 11.0))
    for ax, roi in zip(axes[0], ROIS):
        for index, name in enumerate(MODELS):
            x = [x_of[s] for s in sizes if f"{name}/{roi}" in summary[s]]
            mean = np.array([summary[s][f"{name}/{roi}"]["mean"] for s in sizes
                             if f"{name}/{roi}" in summary[s]])
            sem = np.array([summary[s][f"{name}/{roi}"]["sem"] for s in sizes
                            if f"{name}/{roi}" in summary[s]])
            ax.errorbar(x, mean, yerr=np.nan_to_num(sem), marker="o", capsize=3,
                        color=f"C{index}", label=name)
        if roi == "semantic" and bounds:
            for style, name in (("--", "true semantic features"), (":", "lexicon learned here")):
                points = sorted((b["train_minutes"], b[name]) for b in bounds.values())
                ax.plot(*zip(*points), style, color="0.4",
                        label=f"{name} (learnability bound)")
        ax.set_xscale("log")
        ticks = sorted(set(x_of.values()) | {b["train_minutes"] for b in bounds.values()})
        ax.set_xticks(ticks, [f"{t:.0f}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("minutes of tuning (and encoding) data")
        seeds = sorted({summary[s]["n_seeds"] for s in sizes})
        ax.set_title(f"{roi} voxels, held-out story ({'-'.join(map(str, seeds))} seeds per size)")
    axes[0, 0].set_ylabel("normalised r (last layer)\nmean ± s.e.m. over seeds")
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, 0.9))  # between the bounds
    # the effects are thousandths: the paired differences on their own axes
    for ax, roi in zip(axes[1], ROIS):
        for index, other in zip((0, 2), MODELS[::2]):
            tests = [(x_of[s], summary[s][f"brain-tuned - {other}, {roi}"]) for s in sizes]
            diffs = [np.asarray(t["differences"]) for _, t in tests]
            sem = [d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0 for d in diffs]
            ax.errorbar([x for x, _ in tests], [d.mean() for d in diffs], yerr=sem, marker="o",
                        capsize=3, color=f"C{index}", label=f"brain-tuned - {other}")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(sorted(set(x_of.values())), [f"{x_of[s]:.0f}" for s in
                                                   sorted(sizes, key=x_of.get)])
        ax.minorticks_off()
        ax.set_xlabel("minutes of tuning (and encoding) data")
        ax.set_title(f"{roi} voxels: paired differences", fontsize=10)
    axes[1, 0].set_ylabel("difference in normalised r\nmean ± s.e.m. of the paired differences")
    axes[1, 0].legend(fontsize=7, loc="best")
    # the encoding-data curve of the largest tuning size: the ridge on the first k stories
    largest = sizes[-1]
    for ax, roi in zip(axes[2], ROIS):
        for index, name in enumerate(MODELS):
            keys = sorted((story_count(k), k) for k in summary[largest]
                          if k.startswith(f"{name}/{roi}_ridge_on_"))
            if keys:
                ax.errorbar([n for n, _ in keys], [summary[largest][k]["mean"] for _, k in keys],
                            yerr=np.nan_to_num([summary[largest][k]["sem"] for _, k in keys]),
                            marker="o", capsize=3, color=f"C{index}", label=name)
        ax.set_xscale("log")
        counts = sorted({story_count(k) for k in summary[largest]
                         if f"/{roi}_ridge_on_" in k})
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.minorticks_off()
        ax.set_xlabel("stories the encoding ridge is fitted on")
        ax.set_title(f"{roi} voxels: encoding-data curve, tuned on {x_of[largest]:.0f} minutes "
                     f"({summary[largest]['n_seeds']} seeds)", fontsize=9)
    axes[2, 0].set_ylabel("normalised r (last layer)\nmean ± s.e.m. over seeds")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
