"""Does brain-tuning help? The scientific check on the built-in story dataset, over seeds.

For each seed: generate the dataset, brain-tune Whisper tiny.en's top block on the training
stories, tune random-fMRI controls the same way (15-TR block permutation and/or another story's
responses), and score every model's last-layer features on the held-out story with the same
ridge protocol (noise-ceiling-normalised r, semantic and auditory voxels). The held-out test and
validation stories rotate with the seed (seed k tests on story k of the 11, validates on story
k + 1), so seeds are independent draws of stories as well as of simulated voxels and tuning
randomness; ``--fixed-stories`` keeps the dataset's default split instead. Then paired tests
across seeds (t-test and Wilcoxon): brain-tuned vs pretrained, each control vs pretrained, and
brain-tuned vs each control.

Usage::

    python benchmarks/study_braintuning.py --seeds 0 1 2 [--epochs 6] [--window 8]
        [--controls block-permuted other-story phase-randomized] [--output study_results]

    # the pre-registered semantic study (docs/semantic_design.rst), one family at a time
    python benchmarks/study_braintuning.py --preregistered --model ssl --seeds 0 --threads 1 \
        --output study_ssl

With ``--preregistered`` a seed (four tuned models, every analysis) took about 10 minutes on
one thread for the self-supervised model and 22-24 for Whisper tiny.en, two seeds at a time on
this machine's 2 cores (``benchmarks/results/semantic_study_*.json``).

Seeds can run in separate processes writing to the same ``--output`` (one torch thread each
uses two cores best); ``--summarize`` then only reads the per-seed rows and prints the tests.
With both controls a seed takes 11-12 minutes on one thread, two seeds running at a time on
this machine's 2 cores (not a unit test). Six seeds: ``benchmarks/results/``.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROIS = ("semantic", "auditory")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="tuning epochs (default: the demo's)")
    parser.add_argument("--window", type=float, help="window length (s)")
    parser.add_argument("--controls", nargs="+", default=["block-permuted"],
                        help="controls: block-permuted, other-story and/or phase-randomized")
    parser.add_argument("--fixed-stories", action="store_true",
                        help="use the dataset's default held-out stories for every seed")
    parser.add_argument("--model", default="whisper-tiny.en",
                        help="pretrained model: whisper-tiny.en, ssl or a local directory")
    parser.add_argument("--stories", choices=("default", "library"), default="default",
                        help="packaged story collection")
    parser.add_argument("--minutes", type=float, help="minutes of training audio (library)")
    parser.add_argument("--context-words", type=int,
                        help="words of context of the semantic voxels (default: the dataset's)")
    parser.add_argument("--preregistered", action="store_true",
                        help="the pre-registered semantic study (docs/semantic_design.rst): "
                        "library stories, 15 minutes (the amendment made before the first "
                        "run), 20 words of context, the three controls, every analysis")
    parser.add_argument("--output", type=Path, default=Path("study_results"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--full", action="store_true",
                        help="also the low-level impact, probe and preference analyses")
    parser.add_argument("--summarize", action="store_true",
                        help="only summarise the per-seed rows already in --output")
    args = parser.parse_args()
    if args.preregistered:
        args.stories, args.minutes = "library", args.minutes or 15.0
        args.context_words = args.context_words or 20
        args.controls = ["block-permuted", "other-story", "phase-randomized"]
        args.full = True
    args.output.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        run_seeds(args)
    rows = [json.loads((args.output / f"seed{seed}_row.json").read_text())
            for seed in args.seeds]
    summarize(rows, args.output)


def held_out_stories(seed, stories="default"):
    """The seed's held-out stories (``make_story_dataset`` keyword arguments).

    Default collection: seed k tests on packaged story k (sorted names) and validates on
    k + 1. Library: seed k tests on the k-th story from the end of the library's order and
    validates on the one before it, so seed 0 is the library's default split (validation
    ``a17``, test ``b17``), seed 1 tests on ``a17`` and validates on ``b16``, seed 2 tests on
    ``b16``, ... (both writers' series in turn); the first training stories, which small
    ``minutes=`` keep, stay the same for the first seeds.
    """
    from sk_braintune.builtin.story import story_texts

    if stories == "library":
        names = list(story_texts("library"))
        test = (len(names) - 1 - seed) % len(names)
        return {"test_story": names[test], "validation_story": names[test - 1]}
    names = sorted(story_texts())
    return {"test_story": names[seed % len(names)],
            "validation_story": names[(seed + 1) % len(names)]}


def study_settings(args, seed):
    """The demo's settings, with this run's options and the seed's held-out stories."""
    from sk_braintune import study

    dataset = {"stories": args.stories, "minutes": args.minutes,
               "context_words": args.context_words}
    if not args.fixed_stories:
        dataset.update(held_out_stories(seed, stories=args.stories))
    overrides = {"controls": tuple(args.controls), "dataset": dataset}
    if args.window:
        overrides["window"] = args.window
    return study.demo_settings(epochs=args.epochs, model=args.model, **overrides)


def run_seeds(args):
    import torch
    from scipy import stats

    from sk_braintune import study

    if args.threads:
        torch.set_num_threads(args.threads)
    analyses = study.ANALYSES if args.full else ("alignment",)
    for seed in args.seeds:
        settings = study_settings(args, seed)
        t0 = time.perf_counter()
        results = study.run_braintuning_study(settings, seed=seed, verbose=False,
                                              analyses=analyses)
        voxels = results.pop("voxel_scores")
        labels = np.asarray(results["voxel_labels"])
        row = {"seed": seed, "seconds": time.perf_counter() - t0, "models": results["models"],
               "test_story": settings.dataset.test_story or "default",
               "best_epoch": results["best_epoch"]}
        for name in results["models"]:
            for roi in ROIS:
                row[f"{name}/{roi}"] = float(results["layers"][name][roi][-1])
            # the secondary measures: every other column of the results table
            table = next(r for r in results["table"] if r["model"] == name)
            for key, value in table.items():
                if key != "model" and isinstance(value, (int, float)):
                    row[f"{name}/{key}"] = float(value)
            for roi, entry in results.get("variance_partitioning", {}).get(name, {}).items():
                row[f"{name}/{roi}_unique"] = float(entry["unique_model"])
            for roi, curve in results.get("encoding_curve", {}).get(name, {}).items():
                for n_stories, value in curve.items():
                    row[f"{name}/{roi}_ridge_on_{n_stories}_stories"] = value
        # within-seed test across semantic voxels (last layer); voxels share 12 latent
        # dimensions, so these p-values overstate independence: the across-seed tests decide
        semantic = labels == "semantic"
        for name in results["models"][1:]:
            diff = voxels[name][-1][semantic] - voxels["pretrained"][-1][semantic]
            diff = diff[np.isfinite(diff)]
            row[f"{name}/semantic_voxel_wilcoxon_p"] = float(stats.wilcoxon(diff).pvalue)
            row[f"{name}/semantic_voxels_improved_%"] = float(np.mean(diff > 0) * 100)
        print(json.dumps(row), flush=True)
        results["settings"] = settings.model_dump(mode="json")
        (args.output / f"seed{seed}.json").write_text(json.dumps(results, indent=2,
                                                                 default=str))
        (args.output / f"seed{seed}_row.json").write_text(json.dumps(row, indent=2))


def summarize(rows, output):
    """Print the per-seed table and the paired tests across seeds; write ``summary.json``."""
    from scipy import stats

    models = rows[0]["models"]
    columns = [f"{m}/{r}" for m in models for r in ROIS]
    print()
    print(f"{'seed':>4} {'test story':>18} " + " ".join(f"{c:>27}" for c in columns))
    for row in rows:
        print(f"{row['seed']:>4} {row['test_story']:>18} "
              + " ".join(f"{row[c]:>27.3f}" for c in columns))
    print(f"{'mean':>4} {'':>18} "
          + " ".join(f"{np.mean([row[c] for row in rows]):>27.3f}" for c in columns))
    pairs = [(m, "pretrained") for m in models[1:]]
    pairs += [("brain-tuned", m) for m in models[2:]]
    # the primary endpoints first, then every secondary measure all the seeds' rows have
    prefix = "brain-tuned/"
    secondary = [key[len(prefix):] for key in rows[0] if key.startswith(prefix)
                 and key[len(prefix):] not in ROIS and "voxel" not in key
                 and all(f"{m}/{key[len(prefix):]}" in row for m in models for row in rows)]
    summary = {}
    for roi in (*ROIS, *secondary):
        for name, reference in pairs:
            a = np.array([row[f"{name}/{roi}"] for row in rows])
            b = np.array([row[f"{reference}/{roi}"] for row in rows])
            diff = a - b
            entry = {"mean_difference": float(diff.mean()), "differences": diff.tolist()}
            entry["means"] = [float(a.mean()), float(b.mean())]
            text = f"{name:>21} - {reference:<21} {roi:<9}: mean {diff.mean():+.4f} " \
                   f"({', '.join(f'{d:+.3f}' for d in diff)})"
            if len(diff) > 1 and np.any(diff != 0):
                entry["paired_t_p"] = float(stats.ttest_rel(a, b).pvalue)
                entry["wilcoxon_p"] = float(stats.wilcoxon(diff).pvalue)
                entry["sd_difference"] = float(diff.std(ddof=1))
                text += (f", paired t p={entry['paired_t_p']:.3g}, "
                         f"Wilcoxon p={entry['wilcoxon_p']:.3g}")
            summary[f"{name} - {reference}, {roi}"] = entry
            print(text)
    (output / "summary.json").write_text(json.dumps({"per_seed": rows, "summary": summary},
                                                    indent=2, default=str))
    figure = plot_differences(rows)
    figure.savefig(output / "summary.png", dpi=120, bbox_inches="tight")
    print(f"wrote {output / 'summary.json'} and {output / 'summary.png'}")


def plot_differences(rows):
    """Change from the pretrained model per held-out story, one panel per voxel kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = rows[0]["models"][1:]
    fig, axes = plt.subplots(1, len(ROIS), figsize=(4.5 * len(ROIS), 3.6), sharey=True)
    for ax, roi in zip(np.atleast_1d(axes), ROIS):
        for x, name in enumerate(models):
            diff = np.array([row[f"{name}/{roi}"] - row[f"pretrained/{roi}"] for row in rows])
            ax.scatter(np.full(diff.size, x) + np.linspace(-0.12, 0.12, diff.size), diff,
                       s=18, color=f"C{x}", zorder=3)
            ax.hlines(diff.mean(), x - 0.25, x + 0.25, color=f"C{x}", lw=2.5)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(range(len(models)), models, rotation=15)
        ax.set_title(f"{roi} voxels")
    np.atleast_1d(axes)[0].set_ylabel("normalised r, tuned - pretrained\n(dots: held-out "
                                      "stories, bar: mean)")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
