"""The real-data commands at LeBel et al.'s full size, on a simulated ds003020.

Writes a synthetic ds003020 in the real file formats at the real size (84 stories of 300-400 TRs,
90,000 voxels of which some are NaN, ``individual_repeats`` of the test story, 44.1 kHz stereo
WAVs of the stories' durations, TextGrids, ``respdict.json``) with
:func:`sk_braintune.testing.make_miniature_lebel2023`, then runs ``python3 -m sk_braintune
evaluate`` (a small random wav2vec2, every layer) and ``tune`` (the same model, one epoch) on 27
of the stories and on all 84, each command in its own process. Before each command the memory
it needs is estimated (:func:`sk_braintune.executors.estimate_memory`) and printed; afterwards
each stage's wall time and peak resident memory (RSS sampled every 0.2 s, attributed to the
stages the command prints; the whole command's peak from the kernel) are printed and written to
``benchmarks/results/realdata_scale.json`` (rewritten after every command, so an interrupted run
keeps what it measured). A command whose estimate exceeds the memory available now is skipped
and says so, rather than pushing the machine into swap or the OOM killer (which is told to pick
the benchmark first).

Usage (long: tens of minutes on two cores; ~22 GB of disk)::

    nice python3 benchmarks/bench_realdata_scale.py > bench_realdata_scale.log 2>&1
    python3 benchmarks/bench_realdata_scale.py --stories 27 --commands evaluate --voxels 20000
    # write once, then run on the kept dataset (one thread on a shared machine)
    python3 benchmarks/bench_realdata_scale.py --stories 84 --commands evaluate --keep \
        --threads 1 --analyses core
    python3 benchmarks/bench_realdata_scale.py --stories 27 --commands evaluate --reuse --keep
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GIB = 2.0 ** 30
TEST_STORY = "wheretheressmoke"
VALIDATION = ("life", "stagefright")


def story_names(n_stories):
    """``n_stories`` names: the paper's test and validation stories plus numbered ones."""
    return [f"story{i:02d}" for i in range(n_stories - 3)] + [*VALIDATION, TEST_STORY]


def subset(names, n_stories):
    """The first ``n_stories - 3`` training stories plus validation and test."""
    train = [s for s in names if s not in (*VALIDATION, TEST_STORY)]
    return train[:n_stories - 3] + [*VALIDATION, TEST_STORY]


def dataset_trs(n_stories, seed):
    """Response rows of each story of the dataset ``write_dataset`` writes."""
    names = story_names(n_stories)
    n_trs = np.random.default_rng(seed).integers(300, 401, size=n_stories)
    n_trs[names.index(TEST_STORY)] = 251  # the real test story keeps 251 TRs
    return {s: int(n) for s, n in zip(names, n_trs)}


def write_dataset(root, n_stories, n_voxels, nan_voxels, seed):
    from sk_braintune.testing import make_miniature_lebel2023

    names = story_names(n_stories)
    n_trs = np.array([dataset_trs(n_stories, seed)[s] for s in names])
    # noise from 3 to 25 signal SDs: cc_max from 0.99 down to 0.13 over 10 repeats, about a
    # fifth of the voxels above the tuner's default --min-ceiling 0.4 (as in the real data)
    make_miniature_lebel2023(root, subjects=("UTS01",), stories=names, n_voxels=n_voxels,
                             n_trs=[int(n) for n in n_trs], n_repeats=10, random_state=seed,
                             nan_voxels=nan_voxels, noise_sd=(3.0, 25.0), verbose=True)
    return names, {s: int(n) for s, n in zip(names, n_trs)}


class RSSSampler(threading.Thread):
    """Samples the resident memory of a process (and its children) every ``interval`` s."""

    def __init__(self, pid, interval=0.2):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples = []  # (time, bytes)
        self.stop = threading.Event()

    def run(self):
        import psutil

        while not self.stop.is_set():
            try:
                rss = self.process.memory_info().rss + sum(
                    c.memory_info().rss for c in self.process.children(recursive=True))
            except psutil.Error:
                break
            self.samples.append((time.perf_counter(), rss))
            self.stop.wait(self.interval)


STAGE_START = re.compile(r"^\[\d\d:\d\d\] (.*) \.\.\.$")
STAGE_END = re.compile(r"^\[\d\d:\d\d\] (.*): done in ([0-9.]+) s$")
PROGRESS_BAR = re.compile(r"\|.*\[\d+:\d+<|^\s*$")  # tqdm updates are not kept in the logs


def _lower_priority():
    os.nice(5)
    try:  # if memory runs out, the kernel kills the benchmark, not another user's process
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass


def run_command(argv, log_path):
    """Run a command; return wall time, peak RSS and per-stage (wall, peak RSS)."""
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, env=env,
                                   preexec_fn=_lower_priority)
        sampler = RSSSampler(process.pid)
        sampler.start()
        marks = [("start-up and load (tune: and stack the responses)", start)]
        ends = {}
        for line in process.stdout:
            if not PROGRESS_BAR.search(line):
                log.write(line)
                log.flush()
            text = line.strip()
            now = time.perf_counter()
            if (match := STAGE_END.match(text)):
                ends[match.group(1)] = (now, float(match.group(2)))
                marks.append(("after " + match.group(1), now))
            elif (match := STAGE_START.match(text)):
                marks.append((match.group(1), now))
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop.set()
        sampler.join()
    end = time.perf_counter()
    marks.append(("end", end))
    stages = []
    for (name, t0), (_, t1) in zip(marks[:-1], marks[1:]):
        peak = max((rss for t, rss in sampler.samples if t0 <= t <= t1), default=0)
        if t1 - t0 > 0.05:
            stages.append({"stage": name, "seconds": round(t1 - t0, 1),
                           "peak_rss_gib": round(peak / GIB, 2)})
    return {"returncode": process.returncode, "seconds": round(end - start, 1),
            "peak_rss_gib": round(usage.ru_maxrss * 1024 / GIB, 2), "stages": stages}


def print_measured(what, measured, estimate, log):
    """A command's exit status, time and peak against its estimate, then each stage's."""
    print(f"{what}: exit {measured['returncode']}, {measured['seconds']} s, peak "
          f"{measured['peak_rss_gib']} GiB (estimated {estimate['peak_gib']:.1f})", flush=True)
    for stage in measured["stages"]:
        print(f"  {stage['stage']:<70} {stage['seconds']:>8.1f} s "
              f"{stage['peak_rss_gib']:>6.2f} GiB", flush=True)
    if measured["returncode"]:
        print(f"  failed: see {log}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path,
                        default=Path(tempfile.gettempdir()) / "sk_braintune_scale" / "ds003020")
    parser.add_argument("--stories", type=int, nargs="+", default=[27, 84])
    parser.add_argument("--voxels", type=int, default=90_000)
    parser.add_argument("--nan-voxels", type=int, default=300)
    parser.add_argument("--commands", nargs="+", default=["evaluate", "tune"],
                        choices=["evaluate", "tune"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic dataset")
    parser.add_argument("--reuse", action="store_true",
                        help="use the dataset already at --root (written by an earlier --keep "
                             "run with the same --stories/--voxels/--seed) instead of writing it")
    parser.add_argument("--analyses", choices=["all", "core"], default="all",
                        help="evaluate: 'core' switches off the variance partitioning and the "
                             "significance test (config keys variance_partitioning, "
                             "significance), leaving features, alignment and low-level impact")
    parser.add_argument("--output", type=Path,
                        default=HERE / "results" / "realdata_scale.json")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import psutil

    from sk_braintune.executors import estimate_memory
    from sk_braintune.testing import make_tiny_model

    results = {"voxels": args.voxels, "nan_voxels": args.nan_voxels, "threads": args.threads,
               "machine": {"cpus": os.cpu_count(),
                           "memory_gib": round(psutil.virtual_memory().total / GIB, 1)},
               "runs": []}

    def save():
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))

    n_max = max(args.stories)
    args.root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.reuse and (args.root / "derivative" / "respdict.json").exists():
        # the dataset may hold more stories than this run uses (written for 84, run on 27)
        respdict = json.loads((args.root / "derivative" / "respdict.json").read_text())
        # respdict.json also lists a story whose files are missing, as the real one does
        n_written = sum((args.root / "stimuli" / f"{s}.wav").exists() for s in respdict)
        if n_written < n_max:
            parser.error(f"--reuse: {args.root} holds {n_written} stories, fewer than {n_max}")
        names = story_names(n_written)
        n_trs = dataset_trs(n_written, args.seed)
        results["write"] = {"stories": n_max, "reused": str(args.root)}
        print(f"using the dataset at {args.root}", flush=True)
    else:
        names, n_trs = write_dataset(args.root, n_max, args.voxels, args.nan_voxels, args.seed)
        disk = sum(p.stat().st_size for p in args.root.rglob("*") if p.is_file()) / GIB
        results["write"] = {"stories": n_max, "seconds": round(time.perf_counter() - t0, 1),
                            "disk_gib": round(disk, 2)}
        print(f"wrote {n_max} stories x {args.voxels} voxels ({disk:.1f} GiB) in "
              f"{results['write']['seconds']} s to {args.root}", flush=True)
    results["analyses"] = args.analyses
    save()
    # small random wav2vec2: 8-channel CNN with the real 320-sample stride, 2 blocks of width
    # 16, so 3 hidden states ("several layers") at a cost the 2-core machine can afford
    model = make_tiny_model("wav2vec2", args.root.parent / "tiny_wav2vec2", conv_dim=(8,) * 4,
                            hidden_size=16, intermediate_size=32)
    layers, hidden = 3, 16
    respdict = json.loads((args.root / "derivative" / "respdict.json").read_text())

    for n_stories in sorted(args.stories):
        stories = subset(names, n_stories)
        rows = sum(n_trs[s] for s in stories)
        seconds = sum((respdict[s] - 5) * 2.0 - 10.0 for s in stories)
        for command in args.commands:
            est = estimate_memory(rows, args.voxels, audio_seconds=seconds, command=command,
                                  n_test_trs=n_trs[TEST_STORY], n_layers=layers,
                                  hidden_size=hidden, selected_fraction=0.2,
                                  # tune stacks only the voxels above --min-ceiling
                                  select_before_stacking=command == "tune")
            if command == "evaluate" and args.analyses == "core":  # those stages do not run
                est["stages"].pop("partitioning", None)
                est["peak_gib"] = max(est["stages"].values())
            available = psutil.virtual_memory().available / GIB
            print(f"\n== {command} on {n_stories} stories ({rows} TRs, {seconds / 3600:.1f} h "
                  f"of audio) x {args.voxels} voxels: estimated peak {est['peak_gib']:.1f} GiB ("
                  + ", ".join(f"{k} {v:.1f}" for k, v in est["stages"].items())
                  + f"); {available:.1f} GiB available now", flush=True)
            run = {"command": command, "stories": n_stories, "trs": rows,
                   "audio_hours": round(seconds / 3600, 2),
                   "estimate_gib": {k: round(v, 2) for k, v in est["stages"].items()},
                   "estimated_peak_gib": round(est["peak_gib"], 2),
                   "available_gib": round(available, 1)}
            if est["peak_gib"] > available - 0.5:
                run["skipped"] = (f"needs ~{est['peak_gib']:.1f} GiB, {available:.1f} GiB "
                                  "available")
                print("skipped: " + run["skipped"], flush=True)
                results["runs"].append(run)
                save()
                continue
            output = args.root.parent / f"out_{command}_{n_stories}"
            argv = [sys.executable, "-m", "sk_braintune", command, "--root", str(args.root),
                    "--subject", "UTS01", "--model", model, "--output", str(output),
                    "--threads", str(args.threads), "--quiet", "--stories", *stories]
            if command == "tune":
                argv += ["--epochs", "1"]
            elif args.analyses == "core":
                config = args.root.parent / "evaluate_core.toml"
                config.write_text("variance_partitioning = false\nsignificance = false\n")
                argv += ["--config", str(config)]
            log = args.output.parent / f"realdata_scale_{command}_{n_stories}.log"
            measured = run_command(argv, log)
            run.update(measured)
            run["log"] = str(log.relative_to(REPO)) if log.is_relative_to(REPO) else str(log)
            results["runs"].append(run)
            save()
            print_measured(f"{command} on {n_stories} stories", measured, est, log)
    if not args.keep:
        shutil.rmtree(args.root.parent, ignore_errors=True)
    print(f"\nresults in {args.output}")


if __name__ == "__main__":
    main()
