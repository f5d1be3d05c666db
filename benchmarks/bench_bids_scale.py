"""Your own data at full size: Narratives' 21styear on fsaverage6 and in MNI space.

Writes a simulated Narratives (OpenNeuro ds002345) in its real layout and formats, at the real
size: ``21styear`` (2,226 volumes of TR 1.5 s, a ``music`` row then the ``story`` row, 56
minutes of 16 kHz audio with a Gentle ``align.json``) and ``pieman`` heard twice (``run-1``,
``run-2``, 300 volumes each: the test story, whose repeats give the noise ceiling), for two
subjects, as the ``afni-nosmooth`` derivatives: GIfTI pairs with one data array per volume at
fsaverage6's 40,962 vertices per hemisphere (zeros on a medial wall), and for ``sub-001`` also
``space-MNI152NLin2009cAsym_res-native`` NIfTI runs at 2.5 mm (78 x 92 x 78 voxels on the
template's field, 120,517 in the MNI152 brain mask nilearn ships, resampled; written volume by
volume into the gzip stream, so the 5 GB run is never in the writer's memory) with fMRIPrep's
brain mask beside them.

Then, each in its own process (so that a peak is its own; libraries imported before the clock):

1. **Loading** ``sub-001``'s ``21styear`` run, by nibabel's plain read of the files (the two
   GIfTI hemispheres into one ``(2226, 81924)`` float32 array; the whole NIfTI through
   ``dataobj`` as float32) and by :func:`sk_braintune.datasets.load_narratives` (the story's
   volumes of the valid columns): wall time and peak resident memory (``ru_maxrss``).
2. **``sk-braintune evaluate --dataset narratives``** (a small random wav2vec2, three hidden
   states, every analysis) on both subjects on fsaverage6, and on ``sub-001`` in MNI space:
   the memory estimate (:func:`sk_braintune.executors.estimate_memory`, with the runs the
   loader reads) printed before, the peak resident memory (sampled every 0.2 s per stage, and
   the kernel's for the whole command) measured after and compared.

Results go to ``benchmarks/results/bids_scale.json`` (rewritten after every step); the
commands' logs beside it.

Usage (tens of minutes on two cores; ~14 GB of disk)::

    nice python3 benchmarks/bench_bids_scale.py > bids_scale.log 2>&1
    python3 benchmarks/bench_bids_scale.py --volumes 400 --test-volumes 120   # smaller
    python3 benchmarks/bench_bids_scale.py --keep    # keep the dataset; then --reuse
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_realdata_scale import print_measured, run_command  # noqa: E402  (one copy)

GIB = 2.0 ** 30
TR = 1.5
RATE = 16_000
N_VERTICES = 40_962
MEDIAL_WALL = 2_000  # vertices per hemisphere that are zero throughout, as in AFNI's output
MNI = "MNI152NLin2009cAsym"
GRID, VOXEL_MM = (78, 92, 78), 2.5


def design(n_volumes, n_test_volumes):
    """task -> (volumes, events rows (onset, duration, trial_type), runs)."""
    story = (n_volumes - 15) * TR  # the story ends a volume before the scan
    test = (n_test_volumes - 19) * TR
    return {"21styear": (n_volumes, [(0.0, 18.0, "music"), (21.0, story, "story")], [None]),
            "pieman": (n_test_volumes, [(0.0, 13.5, "music"), (15.0, test, "story")],
                       ["1", "2"])}


def story_volumes(rows):
    """(first, stop) volume of the story row, the loaders' rule."""
    onset, duration = next((o, d) for o, d, kind in rows if kind == "story")
    first = int(round(onset / TR))
    return first, first + int(round(duration / TR))


def write_stimulus(root, task, rows, rng):
    from scipy.io import wavfile

    seconds = max(o + d for o, d, _ in rows)
    wave = (0.05 * rng.standard_normal(int(seconds * RATE)) * 32767).astype(np.int16)
    wavfile.write(root / "stimuli" / f"{task}_audio.wav", RATE, wave)
    onset = next(o for o, _, kind in rows if kind == "story")
    starts = np.arange(onset + 0.3, seconds - 0.5, 0.35)
    words = [{"case": "success", "word": "the", "alignedWord": "the", "start": float(s),
              "end": float(s + 0.25), "phones": [{"phone": "dh_B", "duration": 0.1},
                                                 {"phone": "ah_E", "duration": 0.15}]}
             for s in starts]
    folder = root / "stimuli" / "gentle" / task
    folder.mkdir(parents=True)
    (folder / "align.json").write_text(json.dumps({"words": words}))


def surface_run(n_volumes, signal, span, rng):
    """(n_volumes, 40962) float32 of one hemisphere: noise, plus the story's signal."""
    values = rng.standard_normal((n_volumes, N_VERTICES), dtype=np.float32)
    if signal is not None:
        values[span[0]:span[1]] += signal
    values[:, :MEDIAL_WALL] = 0.0
    return values


def write_gifti(path, values):
    import nibabel as nib

    arrays = [nib.gifti.GiftiDataArray(row, intent="NIFTI_INTENT_NONE",
                                       datatype="NIFTI_TYPE_FLOAT32") for row in values]
    nib.save(nib.GiftiImage(darrays=arrays), path)


def mni_mask_and_affine():
    """The MNI152 brain mask nilearn ships, on the 2.5 mm grid of the template's field."""
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    template = load_mni152_brain_mask(resolution=1)
    affine = np.diag([VOXEL_MM] * 3 + [1.0])
    affine[:3, 3] = template.affine[:3, 3]
    mask = resample_img(template, target_affine=affine, target_shape=GRID,
                        interpolation="nearest", force_resample=True, copy_header=True)
    return np.asarray(mask.dataobj) > 0, affine


def write_nifti_streamed(path, mask, affine, n_volumes, values):
    """A gzipped 4-D float32 NIfTI written one volume at a time (``values(t)``: the mask's
    values of volume ``t``), as nibabel writes one (level-1 gzip, ``vox_offset`` 352)."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((*mask.shape, n_volumes))
    header.set_data_dtype(np.float32)
    header.set_zooms((VOXEL_MM,) * 3 + (TR,))
    header.set_xyzt_units("mm", "sec")
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header["vox_offset"] = 352
    volume = np.zeros(mask.shape, dtype=np.float32)
    with gzip.open(path, "wb", compresslevel=1) as f:
        header.write_to(f)
        f.write(b"\0" * (352 - f.tell()))
        for t in range(n_volumes):
            volume[mask] = values(t)
            f.write(volume.tobytes(order="F"))


def write_dataset(root, n_subjects, n_volumes, n_test_volumes, mni, seed):
    """The simulated dataset; returns what the estimates need."""
    import nibabel as nib
    import pandas as pd

    rng = np.random.default_rng(seed)
    tasks = design(n_volumes, n_test_volumes)
    (root / "stimuli").mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "scan_exclude.json").write_text("{}")
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "Narratives (simulated at full size)", "BIDSVersion": "1.2.1"}))
    event_meta = {}
    for task, (volumes, rows, _) in tasks.items():
        (root / f"task-{task}_bold.json").write_text(json.dumps({"RepetitionTime": TR}))
        write_stimulus(root, task, rows, rng)
        first, stop = story_volumes(rows)
        event_meta[task] = {task: {"onset": first, "duration": stop - first}}
    (root / "code" / "event_meta.json").write_text(json.dumps(event_meta))
    # the test story's signal, the same at every presentation (so its repeats agree)
    first, stop = story_volumes(tasks["pieman"][1])
    signal = {hemi: np.random.default_rng([seed, k]).standard_normal(
        (stop - first, N_VERTICES), dtype=np.float32) for k, hemi in enumerate("LR")}
    mask, affine = mni_mask_and_affine() if mni else (None, None)
    n_mask = int(mask.sum()) if mni else 0
    mni_signal = np.random.default_rng([seed, 2]).standard_normal(
        (stop - first, n_mask), dtype=np.float32) if mni else None
    for s in range(1, n_subjects + 1):
        subject = f"sub-{s:03d}"
        func = root / subject / "func"
        out = root / "derivatives" / "afni-nosmooth" / subject / "func"
        prep = root / "derivatives" / "fmriprep" / subject / "func"
        for folder in (func, out, prep):
            folder.mkdir(parents=True)
        for task, (volumes, rows, runs) in tasks.items():
            span = story_volumes(rows)
            for run in runs:
                base = f"{subject}_task-{task}" + (f"_run-{run}" if run else "")
                pd.DataFrame([(o, d, kind, f"{task}_audio.wav") for o, d, kind in rows],
                             columns=["onset", "duration", "trial_type", "stim_file"]).to_csv(
                    func / f"{base}_events.tsv", sep="\t", index=False)
                raw = nib.Nifti1Image(np.zeros((2, 2, 2, volumes), np.float32), np.eye(4))
                raw.header.set_xyzt_units("mm", "sec")
                raw.header["pixdim"][4] = TR
                nib.save(raw, func / f"{base}_bold.nii.gz")
                for hemi in "LR":
                    hemisphere = surface_run(volumes, signal[hemi] if task == "pieman"
                                             else None, span, rng)
                    write_gifti(out / f"{base}_space-fsaverage6_hemi-{hemi}_desc-clean"
                                ".func.gii", hemisphere)
                    del hemisphere
                if mni and s == 1:
                    name = f"{base}_space-{MNI}_res-native"
                    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine),
                             prep / f"{name}_desc-brain_mask.nii.gz")

                    def values(t, task=task, span=span):
                        row = 100.0 + rng.standard_normal(n_mask, dtype=np.float32)
                        if task == "pieman" and span[0] <= t < span[1]:
                            row += mni_signal[t - span[0]]
                        return row

                    write_nifti_streamed(out / f"{name}_desc-clean_bold.nii.gz", mask, affine,
                                         volumes, values)
    return tasks, n_mask


READ_NIBABEL = """
import sys, time, resource, numpy as np, nibabel as nib
start = time.perf_counter()
if sys.argv[1].endswith(".gii"):
    data = np.concatenate([np.stack([d.data for d in nib.load(p).darrays]).astype(
        np.float32, copy=False) for p in sys.argv[1:3]], axis=1)
else:
    data = np.asarray(nib.load(sys.argv[1]).dataobj, dtype=np.float32)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      data.shape)
"""

READ_TOOLKIT = """
import sys, time, resource, warnings
import nibabel, nilearn.maskers, pandas, scipy.io.wavfile, scipy.signal, sklearn.utils
from sk_braintune.datasets import load_narratives
start = time.perf_counter()
data = load_narratives(sys.argv[1], "sub-001", ["21styear"], space=sys.argv[2])
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      data.responses["21styear"].shape)
"""


def timed_read(code, *args):
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True,
                            capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                                 "HF_HUB_OFFLINE": "1"})
    seconds, peak, shape = result.stdout.strip().splitlines()[-1].split(" ", 2)
    return {"seconds": round(float(seconds), 2), "peak_gib": round(float(peak), 2),
            "shape": shape}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path,
                        default=Path(tempfile.gettempdir()) / "sk_braintune_bids_scale")
    parser.add_argument("--volumes", type=int, default=2226)
    parser.add_argument("--test-volumes", type=int, default=300)
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--no-mni", action="store_true", help="no MNI runs")
    parser.add_argument("--steps", nargs="+", default=["load", "evaluate"],
                        choices=["load", "evaluate"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the simulated dataset")
    parser.add_argument("--reuse", action="store_true",
                        help="use the dataset an earlier --keep run left at --root")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "bids_scale.json")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import psutil

    from sk_braintune.executors import estimate_memory
    from sk_braintune.testing import make_tiny_model

    root = args.root / "ds002345"
    mni = not args.no_mni
    results = {"volumes": args.volumes, "test_volumes": args.test_volumes,
               "subjects": args.subjects, "vertices": 2 * N_VERTICES, "mni_grid": GRID,
               "mni_voxel_mm": VOXEL_MM, "threads": args.threads,
               "machine": {"cpus": os.cpu_count(),
                           "memory_gib": round(psutil.virtual_memory().total / GIB, 1)}}

    def save():
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")

    if args.reuse and args.output.is_file():  # keep what an earlier run measured of the rest
        earlier = json.loads(args.output.read_text())
        results.update({k: v for k, v in earlier.items() if k in ("write", "load", "evaluate")
                        and k not in args.steps})
    started = time.perf_counter()
    if args.reuse and root.is_dir():
        tasks = design(args.volumes, args.test_volumes)
        n_mask = int(mni_mask_and_affine()[0].sum()) if mni else 0
        results.setdefault("write", {"reused": str(root)})
    else:
        shutil.rmtree(args.root, ignore_errors=True)
        tasks, n_mask = write_dataset(root, args.subjects, args.volumes, args.test_volumes,
                                      mni, args.seed)
        disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / GIB
        results["write"] = {"seconds": round(time.perf_counter() - started, 1),
                            "disk_gib": round(disk, 2)}
        print(f"wrote {root} ({disk:.1f} GiB) in {results['write']['seconds']} s", flush=True)
    results["mni_mask_voxels"] = n_mask
    save()

    func = root / "derivatives" / "afni-nosmooth" / "sub-001" / "func"
    base = "sub-001_task-21styear"
    if "load" in args.steps:
        results["load"] = {}
        files = {"fsaverage6": [func / f"{base}_space-fsaverage6_hemi-{h}_desc-clean.func.gii"
                                for h in "LR"]}
        if mni:
            files[MNI] = [func / f"{base}_space-{MNI}_res-native_desc-clean_bold.nii.gz"]
        for space, paths in files.items():
            nibabel = timed_read(READ_NIBABEL, *paths)
            toolkit = timed_read(READ_TOOLKIT, root, space)
            results["load"][space] = {
                "file_gib": round(sum(p.stat().st_size for p in paths) / GIB, 2),
                "nibabel": nibabel, "load_narratives": toolkit,
                "time_ratio": round(toolkit["seconds"] / nibabel["seconds"], 2)}
            print(f"load {space}: nibabel {nibabel['seconds']} s, peak {nibabel['peak_gib']} "
                  f"GiB {nibabel['shape']}; load_narratives {toolkit['seconds']} s, peak "
                  f"{toolkit['peak_gib']} GiB {toolkit['shape']}: "
                  f"{results['load'][space]['time_ratio']}x nibabel's time", flush=True)
            save()

    if "evaluate" in args.steps:
        results["evaluate"] = []
        model = make_tiny_model("wav2vec2", args.root / "tiny_wav2vec2", conv_dim=(8,) * 4,
                                hidden_size=16, intermediate_size=32)
        train_span = story_volumes(tasks["21styear"][1])
        test_span = story_volumes(tasks["pieman"][1])
        n_trs = (train_span[1] - train_span[0]) + (test_span[1] - test_span[0])
        audio_seconds = sum(max(o + d for o, d, _ in rows) for _, rows, _ in tasks.values())
        runs = [("fsaverage6", [f"sub-{s:03d}" for s in range(1, args.subjects + 1)])]
        if mni:
            runs.append((MNI, ["sub-001"]))
        for space, subjects in runs:
            surface = space == "fsaverage6"
            columns = 2 * N_VERTICES if surface else n_mask
            kept = 2 * (N_VERTICES - MEDIAL_WALL) if surface else n_mask
            # GIfTI runs are read whole; NIfTI runs only over their story's volumes
            volumes = ([tasks["21styear"][0]] + [tasks["pieman"][0]] * 2 if surface
                       else [train_span[1] - train_span[0]] + [test_span[1] - test_span[0]] * 2)
            est = estimate_memory(n_trs, kept, audio_seconds=audio_seconds,
                                  n_test_trs=test_span[1] - test_span[0], n_repeats=2,
                                  hidden_size=16, run_volumes=volumes, run_columns=columns,
                                  surface_runs=surface,
                                  longest_story_seconds=tasks["21styear"][1][1][1] + 21.0)
            available = psutil.virtual_memory().available / GIB
            print(f"\n== evaluate --dataset narratives --space {space} on {' '.join(subjects)}"
                  f" ({n_trs} TRs x {kept} columns each): estimated peak {est['peak_gib']:.1f} "
                  "GiB (" + ", ".join(f"{k} {v:.1f}" for k, v in est["stages"].items())
                  + f"); {available:.1f} GiB available now", flush=True)
            run = {"space": space, "subjects": subjects, "trs": n_trs, "columns": kept,
                   "estimate_gib": {k: round(v, 2) for k, v in est["stages"].items()},
                   "estimated_peak_gib": round(est["peak_gib"], 2)}
            output = args.root / f"out_{space}"
            argv = [sys.executable, "-m", "sk_braintune", "evaluate", "--dataset",
                    "narratives", "--root", str(root), "--space", space, "--subject",
                    *subjects, "--model", model, "--output", str(output), "--threads",
                    str(args.threads), "--quiet"]
            log = args.output.parent / f"bids_scale_evaluate_{space}.log"
            run.update(run_command(argv, log))
            run["log"] = str(log.relative_to(REPO)) if log.is_relative_to(REPO) else str(log)
            run["within_estimate"] = run["peak_rss_gib"] <= run["estimated_peak_gib"]
            results["evaluate"].append(run)
            save()
            print_measured(f"evaluate --space {space}", run, est, log)
    if not args.keep:
        shutil.rmtree(args.root, ignore_errors=True)
    print(f"\nresults in {args.output}")


if __name__ == "__main__":
    main()
