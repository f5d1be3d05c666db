"""Loading Narratives-sized surface runs: load_narratives against nibabel's plain read.

Writes one simulated Narratives task in the real layout and formats (``events.tsv`` with a
``music`` and a ``story`` row, ``<task>_audio.wav`` at 16 kHz, a Gentle ``align.json``, the
``afni-nosmooth`` GIfTI pair with one data array per volume at fsaverage6's 40,962 vertices per
hemisphere, zeros on a medial wall), by default at the size of ``21styear`` (2,226 volumes).
Then, each in its own process (so that peak memory is its own): nibabel's plain read of the two
GIfTI files into one ``(n_volumes, 81,924)`` float32 array, and
:func:`sk_braintune.datasets.load_narratives` of the same run. Prints and writes wall time and
peak resident memory (``ru_maxrss``, imports included) to ``benchmarks/results/bids_load.json``,
with the memory the data themselves take (``n_volumes x n_vertices x 4`` bytes) for reference.
Libraries are imported before the clock starts in both processes.

Usage::

    python3 benchmarks/bench_bids_load.py                 # 21styear's size
    python3 benchmarks/bench_bids_load.py --volumes 600   # smaller
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TR = 1.5
N_VERTICES = 40962

READ_NIBABEL = """
import sys, time, resource, numpy as np, nibabel as nib
start = time.perf_counter()
parts = []
for path in sys.argv[1:3]:
    img = nib.load(path)
    parts.append(np.stack([d.data for d in img.darrays]).astype(np.float32, copy=False))
data = np.concatenate(parts, axis=1)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      data.shape[0], data.shape[1])
"""

READ_TOOLKIT = """
import sys, time, resource, warnings
# the libraries the loader uses, imported before the clock starts (as nibabel is above)
import nibabel, nilearn.maskers, pandas, scipy.io.wavfile, scipy.signal, sklearn.utils
from sk_braintune.datasets import load_narratives
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    data = load_narratives(sys.argv[1], "sub-001", exclude=False)
story = data.stories[0]
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      data.responses[story].shape[0], data.responses[story].shape[1])
"""


def write_dataset(root, n_volumes, rng):
    import nibabel as nib
    import pandas as pd
    from scipy.io import wavfile

    task = "21styear"
    music, story_onset = 18.0, 21.0
    story_seconds = (n_volumes - 1) * TR - story_onset
    audio_seconds = story_onset + story_seconds
    (root / "stimuli" / "gentle" / task).mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "scan_exclude.json").write_text("{}")
    (root / f"task-{task}_bold.json").write_text(json.dumps({"RepetitionTime": TR}))
    wave = (0.1 * rng.standard_normal(int(audio_seconds * 16000)) * 32767).astype(np.int16)
    wavfile.write(root / "stimuli" / f"{task}_audio.wav", 16000, wave)
    starts = np.arange(story_onset + 0.5, audio_seconds - 1.0, 0.4)
    words = [{"case": "success", "word": "w", "alignedWord": "w", "start": float(s),
              "end": float(s + 0.3), "phones": [{"phone": "ah_S", "duration": 0.3}]}
             for s in starts]
    (root / "stimuli" / "gentle" / task / "align.json").write_text(json.dumps({"words": words}))
    func = root / "sub-001" / "func"
    func.mkdir(parents=True)
    base = f"sub-001_task-{task}"
    pd.DataFrame({"onset": [0.0, story_onset], "duration": [music, story_seconds],
                  "trial_type": ["music", "story"],
                  "stim_file": [f"{task}_audio.wav"] * 2}).to_csv(
        func / f"{base}_events.tsv", sep="\t", index=False)
    img = nib.Nifti1Image(np.zeros((2, 2, 2, n_volumes), np.float32), np.eye(4))
    img.header["pixdim"][4] = TR
    nib.save(img, func / f"{base}_bold.nii.gz")
    out = root / "derivatives" / "afni-nosmooth" / "sub-001" / "func"
    out.mkdir(parents=True)
    paths = []
    for hemi in "LR":
        values = rng.standard_normal((n_volumes, N_VERTICES), dtype=np.float32)
        values[:, :2000] = 0.0  # a medial wall
        arrays = [nib.gifti.GiftiDataArray(row, intent="NIFTI_INTENT_NONE",
                                           datatype="NIFTI_TYPE_FLOAT32") for row in values]
        path = out / f"{base}_space-fsaverage6_hemi-{hemi}_desc-clean.func.gii"
        nib.save(nib.GiftiImage(darrays=arrays), path)
        paths.append(path)
        del values, arrays
    return paths


def run(code, *args):
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True,
                            capture_output=True, text=True, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                                 "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    seconds, peak, rows, columns = result.stdout.split()[-4:]
    return {"seconds": float(seconds), "peak_gib": float(peak),
            "rows": int(rows), "columns": int(columns)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=2226)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "ds002345"
        started = time.perf_counter()
        paths = write_dataset(root, args.volumes, rng)
        written = time.perf_counter() - started
        nibabel = run(READ_NIBABEL, *paths)
        toolkit = run(READ_TOOLKIT, root)
    data_gib = args.volumes * 2 * N_VERTICES * 4 / 2 ** 30
    results = {"volumes": args.volumes, "vertices": 2 * N_VERTICES,
               "data_gib": data_gib, "write_seconds": written, "nibabel": nibabel,
               "load_narratives": toolkit,
               "time_ratio": toolkit["seconds"] / nibabel["seconds"],
               "peak_ratio": toolkit["peak_gib"] / nibabel["peak_gib"]}
    print(json.dumps(results, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "bids_load.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
