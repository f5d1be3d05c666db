"""Single- vs multi-participant brain-tuning, scored on held-out participants (built-in data).

The multi-brain-tuning follow-up's question on the built-in story dataset with several
simulated listeners: tune Whisper tiny.en's top block (the demo's settings) on one participant
(P01) and, separately, on all training participants at once (one shared head, each
participant's loss back-propagated on the same forward pass); then, for every held-out
participant, fit voxelwise encoding models on the last-layer features of the pretrained, the
single-participant and the multi-participant model with 1/8, 1/4, 1/2 and all of that
participant's training data, and score them on the test story
(:func:`sk_braintune.analysis.data_efficiency_curve`).

Usage::

    python benchmarks/multi_participant_tuning.py --participants 4 --held-out 1 \\
        [--seed 0] [--epochs 4] [--quick] [--output multi_participant_results]

Writes ``curve.csv`` and ``data_efficiency.png`` to ``--output`` and prints the table. The
tuning of both models shares one frozen-layer cache (same windows). Not a unit test: with the
demo's sizes it takes about twice the demo's tuning time on this machine's 2 cores.
"""

import argparse
import time
from pathlib import Path

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=4,
                        help="simulated listeners in the dataset (training + held out)")
    parser.add_argument("--held-out", type=int, default=1, help="participants held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="tuning epochs (default: the demo's)")
    parser.add_argument("--quick", action="store_true", help="the demo's quick sizes")
    parser.add_argument("--model", help="model directory (default: Whisper tiny.en)")
    parser.add_argument("--output", type=Path, default=Path("multi_participant_results"))
    args = parser.parse_args()
    if args.held_out < 1 or args.participants - args.held_out < 2:
        parser.error("need at least 2 training participants and 1 held-out participant")
    args.output.mkdir(parents=True, exist_ok=True)

    from sk_braintune.analysis import data_efficiency_curve, plot_data_efficiency
    from sk_braintune.evaluation import default_encoder
    from sk_braintune.builtin import make_story_dataset
    from sk_braintune.datasets import participant_windows, select_participant, windows_from_dataset
    from sk_braintune.features import SpeechFeatureExtractor
    from sk_braintune.builtin import load_whisper_tiny_en
    from sk_braintune.study import demo_settings
    from sk_braintune.tuning import BrainTuner, FrozenLayerCache

    settings = demo_settings(quick=args.quick, epochs=args.epochs)
    started = time.perf_counter()
    data = make_story_dataset(n_participants=args.participants, random_state=args.seed,
                              **settings.dataset.model_dump(exclude_none=True,
                                                            exclude={"n_participants"}))
    training = list(data.participants[:args.participants - args.held_out])
    held_out = list(data.participants[args.participants - args.held_out:])
    fit_stories = list(data.split["train"]) + list(data.split["validation"])
    test_stories = list(data.split["test"])
    ceilings = np.stack([data.participant_data[p].noise_ceiling for p in training])
    voxels = np.flatnonzero(ceilings.min(axis=0) > settings.min_ceiling)
    print(f"{len(data.participants)} participants ({', '.join(training)} tune, "
          f"{', '.join(held_out)} held out), {len(voxels)} voxels with noise ceiling > "
          f"{settings.min_ceiling} for every training participant", flush=True)

    model = args.model or load_whisper_tiny_en()
    cache = FrozenLayerCache()
    tuner_params = dict(settings.tuner.model_dump(), validation=0.2, random_state=args.seed,
                        frozen_layer_cache=cache)
    window = settings.window
    tuners = {}
    for name, who in (("single-participant", training[:1]), ("multi-participant", training)):
        X, y, groups, participants = participant_windows(data, fit_stories, window=window,
                                                         participants=who)
        t0 = time.perf_counter()
        tuners[name] = BrainTuner(model, **tuner_params).fit(
            X, y[:, voxels], groups=groups, participants=participants)
        best = tuners[name].history_[tuners[name].best_epoch_]
        print(f"{name}: {len(X)} rows, best epoch {tuners[name].best_epoch_}, validation r "
              f"{best['valid_r']:.3f}, {time.perf_counter() - t0:.0f} s", flush=True)

    X_all, _, g_all = windows_from_dataset(data, fit_stories + test_stories, window=window)
    features = {"pretrained": SpeechFeatureExtractor(model, layers=-1, pooling="mean")
                .fit_transform(X_all)}
    features.update({name: t.transform(X_all) for name, t in tuners.items()})
    responses, noise_ceilings = {}, {}
    for participant in held_out:
        own = select_participant(data, participant)
        _, responses[participant], _ = windows_from_dataset(own, fit_stories + test_stories,
                                                            window=window)
        noise_ceilings[participant] = np.asarray(own.noise_ceiling)
    curves = data_efficiency_curve(features, responses, g_all, fit_stories, test_stories,
                                   noise_ceiling=noise_ceilings, voxels=voxels,
                                   reference="pretrained",
                                   estimator=default_encoder(cv=settings.ridge_cv))
    curves.to_csv(args.output / "curve.csv", index=False)
    plot_data_efficiency(curves, metric="mean_normalized", reference="pretrained",
                         ylabel="normalised r (tuned voxels)").savefig(
        args.output / "data_efficiency.png", dpi=120)
    summary = curves.groupby(["model", "fraction"], sort=False)[
        ["mean_r", "mean_normalized", "relative_to_reference"]].mean()
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"total {time.perf_counter() - started:.0f} s; results in {args.output}")


if __name__ == "__main__":
    main()
