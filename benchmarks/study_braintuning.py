"""Does brain-tuning help? The scientific check on the built-in story dataset, over seeds.

For each seed: generate the dataset, brain-tune Whisper tiny.en's top block on the training
stories, tune a random-fMRI control (15-TR block permutation) the same way, and score the
pretrained, brain-tuned and control models' last-layer features on the held-out story with the
same ridge protocol (noise-ceiling-normalised r, semantic and auditory voxels). Then a paired
test across seeds (t-test and Wilcoxon) of brain-tuned vs pretrained and control vs pretrained,
and, within each seed, a Wilcoxon signed-rank test across semantic voxels.

Usage::

    python benchmarks/study_braintuning.py --seeds 0 1 2 [--epochs 6] [--window 8]
                                           [--output study_results]

Runs for about 5-10 minutes per seed on 2 CPU cores (not a unit test).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="tuning epochs (default: the demo's)")
    parser.add_argument("--window", type=float, help="window length (s)")
    parser.add_argument("--output", type=Path, default=Path("study_results"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--full", action="store_true",
                        help="also the low-level impact, probe and preference analyses")
    args = parser.parse_args()

    import torch
    from scipy import stats

    from sk_braintune import study

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = study.demo_settings(epochs=args.epochs)
    if args.window:
        settings["window"] = args.window
    analyses = study.ANALYSES if args.full else ("alignment",)
    args.output.mkdir(parents=True, exist_ok=True)

    per_seed = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        results = study.run_braintuning_study(settings, seed=seed, verbose=False,
                                              figures=False, analyses=analyses)
        voxels = results.pop("voxel_scores")
        labels = np.asarray(_voxel_labels(seed, settings))
        row = {"seed": seed, "seconds": time.perf_counter() - t0}
        for name in study.MODEL_NAMES:
            for roi in ("semantic", "auditory"):
                row[f"{name}/{roi}"] = float(results["layers"][name][roi][-1])
        # within-seed test across semantic voxels (last layer)
        semantic = labels == "semantic"
        for name in ("brain-tuned", "random-fMRI"):
            diff = voxels[name][-1][semantic] - voxels["pretrained"][-1][semantic]
            diff = diff[np.isfinite(diff)]
            row[f"{name}/semantic_voxel_wilcoxon_p"] = float(stats.wilcoxon(diff).pvalue)
            row[f"{name}/semantic_voxels_improved_%"] = float(np.mean(diff > 0) * 100)
        row["best_epoch"] = results["best_epoch"]
        per_seed.append(row)
        print(json.dumps(row), flush=True)
        (args.output / f"seed{seed}.json").write_text(json.dumps(results, indent=2,
                                                                 default=str))

    print()
    print(f"{'seed':>4} " + " ".join(f"{m + '/' + r:>24}" for m in study.MODEL_NAMES
                                     for r in ("semantic", "auditory")))
    for row in per_seed:
        print(f"{row['seed']:>4} " + " ".join(f"{row[m + '/' + r]:>24.3f}"
                                             for m in study.MODEL_NAMES
                                             for r in ("semantic", "auditory")))
    summary = {}
    for roi in ("semantic", "auditory"):
        base = np.array([row[f"pretrained/{roi}"] for row in per_seed])
        for name in ("brain-tuned", "random-fMRI"):
            other = np.array([row[f"{name}/{roi}"] for row in per_seed])
            diff = other - base
            entry = {"mean_difference": float(diff.mean()),
                     "differences": diff.tolist()}
            if len(diff) > 1:
                entry["paired_t_p"] = float(stats.ttest_rel(other, base).pvalue)
                entry["wilcoxon_p"] = float(stats.wilcoxon(diff).pvalue)
            summary[f"{name} - pretrained, {roi}"] = entry
            print(f"{name:>12} - pretrained, {roi:<9}: mean diff {diff.mean():+.3f} "
                  f"({', '.join(f'{d:+.3f}' for d in diff)})"
                  + (f", paired t p={entry['paired_t_p']:.3g}, Wilcoxon p="
                     f"{entry['wilcoxon_p']:.3g}" if len(diff) > 1 else ""))
    (args.output / "summary.json").write_text(json.dumps(
        {"per_seed": per_seed, "summary": summary, "settings": settings}, indent=2,
        default=str))


def _voxel_labels(seed, settings):
    from sk_braintune.datasets import make_story_dataset

    kwargs = {k: v for k, v in settings["dataset"].items() if v is not None}
    return make_story_dataset(random_state=seed, **kwargs).voxel_labels


if __name__ == "__main__":
    main()
