"""Run independent jobs in this process, as local subprocesses, or as a Slurm job array.

The unit of work of a study at scale is one job per participant x model x control (tune or
evaluate one model on one participant). :func:`run_jobs` runs such a list of jobs through
`submitit <https://github.com/facebookincubator/submitit>`_ and returns their results in job
order: ``executor="none"`` calls the function here, one job after the other (no dependency);
``"local"`` runs every job in its own Python process on this machine (submitit's
``LocalExecutor``: the same pickling, logs and error reports as on a cluster, which is what the
tests use); ``"slurm"`` submits one Slurm job array with the partition, GPUs, time and memory
given. :func:`estimate_memory` says up front how much memory a command needs, to choose
``mem_gb``.

Each job's function and argument are pickled (with cloudpickle) into ``folder``, where submitit
also writes each job's stdout and stderr; a failed job raises :class:`JobError` naming the job
and the path of its stderr log.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path

from .exceptions import JobError

__all__ = ["EXECUTORS", "JobError", "job_grid", "make_executor", "run_jobs", "estimate_memory"]

logger = logging.getLogger(__name__)

EXECUTORS = ("none", "local", "slurm")
"""Names accepted by ``executor``."""


def job_grid(**axes):
    """Every combination of the given values, as one dict per job.

    Parameters
    ----------
    **axes : sequence
        Name -> values, e.g. ``participant=["UTS01", "UTS02"], control=[None, "permuted"]``.

    Returns
    -------
    jobs : list of dict
        ``len = prod(len(values))``, in row-major order (the last axis varies fastest).

    Examples
    --------
    >>> job_grid(participant=["UTS01", "UTS02"], model=["a", "b"])[1]
    {'participant': 'UTS01', 'model': 'b'}
    """
    names = list(axes)
    for name, values in axes.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise TypeError(f"job_grid({name}=...) needs a sequence of values; got "
                            f"{values!r}. Wrap a single value in a list.")
    return [dict(zip(names, combo)) for combo in itertools.product(*axes.values())]


def _check_resources(time_min, mem_gb, gpus, cpus_per_task):
    if not (isinstance(time_min, (int, float)) and time_min > 0):
        raise ValueError(f"time_min must be a positive number of minutes; got {time_min!r}.")
    if not (isinstance(mem_gb, (int, float)) and mem_gb > 0):
        raise ValueError(f"mem_gb must be a positive number of GB; got {mem_gb!r}.")
    if not (isinstance(gpus, int) and gpus >= 0):
        raise ValueError(f"gpus must be a non-negative int (GPUs per job); got {gpus!r}.")
    if cpus_per_task is not None and not (isinstance(cpus_per_task, int) and cpus_per_task > 0):
        raise ValueError(f"cpus_per_task must be a positive int or None; got "
                         f"{cpus_per_task!r}.")


def make_executor(executor, folder, *, slurm_partition=None, gpus=0, time_min=60, mem_gb=16,
                  cpus_per_task=None, name="sk_braintune", slurm_array_parallelism=None,
                  slurm_additional_parameters=None, slurm_setup=None):
    """A configured submitit executor.

    Parameters
    ----------
    executor : {"local", "slurm"}
        submitit's ``LocalExecutor`` or ``SlurmExecutor`` (through ``AutoExecutor``).
    folder : str or path-like
        Where submitit keeps the pickled jobs and the logs (``%j`` is the job id).
    slurm_partition : str, optional
        Slurm partition (``--partition``).
    gpus : int, default=0
        GPUs per job (``--gpus-per-node``).
    time_min : float, default=60
        Time limit per job in minutes (``--time``); local jobs are killed after it too.
    mem_gb : float, default=16
        Memory per job in GB (``--mem``); see :func:`estimate_memory`.
    cpus_per_task : int, optional
        CPUs per job (``--cpus-per-task``).
    name : str, default="sk_braintune"
        Job name.
    slurm_array_parallelism : int, optional
        At most this many jobs of the array run at once (``--array=...%N``).
    slurm_additional_parameters : dict, optional
        Other ``#SBATCH`` options, e.g. ``{"account": "lab", "qos": "high"}``.
    slurm_setup : list of str, optional
        Shell lines run before each job (``module load cuda``, ``source venv/bin/activate``).

    Returns
    -------
    executor : submitit.AutoExecutor
    """
    from ._utils import require

    require("submitit", "running jobs with executor='local' or 'slurm'")
    import submitit

    if executor not in ("local", "slurm"):
        raise ValueError(f"make_executor needs executor 'local' or 'slurm'; got {executor!r}.")
    _check_resources(time_min, mem_gb, gpus, cpus_per_task)
    try:
        result = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=executor)
    except RuntimeError as exc:  # submitit's SlurmExecutor without srun on the PATH
        raise RuntimeError(f"executor='slurm' needs a Slurm cluster ({exc}); submit from a "
                           "login node, or use executor='local' on one machine.") from exc
    parameters = {"timeout_min": int(max(1, round(time_min))), "mem_gb": mem_gb,
                  "gpus_per_node": gpus, "name": name}
    if cpus_per_task is not None:
        parameters["cpus_per_task"] = cpus_per_task
    if executor == "slurm":
        if slurm_partition is not None:
            parameters["slurm_partition"] = slurm_partition
        if slurm_array_parallelism is not None:
            parameters["slurm_array_parallelism"] = int(slurm_array_parallelism)
        if slurm_additional_parameters:
            parameters["slurm_additional_parameters"] = dict(slurm_additional_parameters)
        if slurm_setup:
            parameters["slurm_setup"] = list(slurm_setup)
    elif slurm_partition or slurm_array_parallelism or slurm_additional_parameters or slurm_setup:
        raise ValueError("slurm_* options need executor='slurm'.")
    result.update_parameters(**parameters)
    return result


def _stderr_tail(path, n_lines=8):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n_lines:])


def run_jobs(function, jobs, *, executor="none", folder=None, slurm_partition=None, gpus=0,
             time_min=60, mem_gb=16, cpus_per_task=None, name="sk_braintune",
             slurm_array_parallelism=None, slurm_additional_parameters=None, slurm_setup=None,
             poll_seconds=1.0, verbose=False):
    """Run ``function(job)`` for every job and return the results in job order.

    Parameters
    ----------
    function : callable
        Called with one job at a time; must be picklable for ``"local"`` and ``"slurm"``
        (a module-level function, or a ``functools.partial`` of one).
    jobs : sequence
        One item per job (e.g. dicts from :func:`job_grid`: participant x model x control).
    executor : {"none", "local", "slurm"}, default="none"
        ``"none"`` runs here, sequentially; ``"local"`` in one subprocess per job
        (submitit ``LocalExecutor``); ``"slurm"`` as one Slurm job array.
    folder : str or path-like, optional
        Logs and pickles of the jobs (required for ``"local"`` and ``"slurm"``; on a cluster
        it must be on a file system the compute nodes see).
    slurm_partition, gpus, time_min, mem_gb, cpus_per_task, name
        Resources of each job, see :func:`make_executor`; ignored with ``"none"``.
    slurm_array_parallelism, slurm_additional_parameters, slurm_setup
        Slurm-only options, see :func:`make_executor`.
    poll_seconds : float, default=1.0
        How often the state of submitted jobs is checked.
    verbose : bool, default=False
        Show a progress bar over finished jobs.

    Returns
    -------
    results : list
        ``results[i]`` is ``function(jobs[i])``.

    Raises
    ------
    JobError
        When a job fails: the message names the job, its position and (for submitted jobs)
        the path of its stderr log with its last lines; the other jobs are left to finish.

    Examples
    --------
    >>> run_jobs(abs, [-1, 2, -3])
    [1, 2, 3]
    >>> run_jobs(abs, [-1, 2], executor="local", folder=tmp_path)  # doctest: +SKIP
    [1, 2]
    """
    from tqdm.auto import tqdm

    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}; got {executor!r}.")
    if not callable(function):
        raise TypeError(f"function must be callable; got {function!r}.")
    jobs = list(jobs)
    if executor == "none":
        _check_resources(time_min, mem_gb, gpus, cpus_per_task)
        results = []
        for index, job in enumerate(tqdm(jobs, desc="jobs", disable=not verbose)):
            try:
                results.append(function(job))
            except Exception as exc:
                raise JobError(f"job {index} of {len(jobs)} ({job!r:.200}) failed: "
                               f"{type(exc).__name__}: {exc}", index) from exc
        return results
    if folder is None:
        raise ValueError(f"executor={executor!r} needs folder=..., a directory for the jobs' "
                         "pickles and logs (on a cluster: one the compute nodes can see).")
    if not jobs:
        return []
    submitter = make_executor(executor, folder, slurm_partition=slurm_partition, gpus=gpus,
                              time_min=time_min, mem_gb=mem_gb, cpus_per_task=cpus_per_task,
                              name=name, slurm_array_parallelism=slurm_array_parallelism,
                              slurm_additional_parameters=slurm_additional_parameters,
                              slurm_setup=slurm_setup)
    submitted = submitter.map_array(function, jobs)
    logger.info("submitted %d %s jobs (%s); logs in %s", len(submitted), executor,
                submitted[0].job_id if submitted else "-", folder)
    progress = tqdm(total=len(submitted), desc=f"{executor} jobs", disable=not verbose)
    finished = set()
    try:
        while len(finished) < len(submitted):
            for index, job in enumerate(submitted):
                if index not in finished and job.done():
                    finished.add(index)
                    progress.update(1)
            if len(finished) < len(submitted):
                time.sleep(poll_seconds)
    finally:
        progress.close()
    results = []
    for index, job in enumerate(submitted):
        try:
            results.append(job.result())
        except Exception as exc:  # noqa: BLE001 - submitit raises several types
            stderr = Path(job.paths.stderr)
            tail = _stderr_tail(stderr)
            raise JobError(
                f"job {index} of {len(jobs)} ({jobs[index]!r:.200}; {executor} job id "
                f"{job.job_id}) failed: {type(exc).__name__}. Its stderr is {stderr}"
                + (f"; last lines:\n{tail}" if tail else "."), index, stderr) from exc
    return results


# -- memory estimates ---------------------------------------------------------------------------

_GIB = 2.0 ** 30


def estimate_memory(n_trs, n_voxels, *, audio_seconds, command="evaluate", n_test_trs=None,
                    n_repeats=10, n_layers=3, hidden_size=32, n_delays=4, n_alphas=None,
                    selected_fraction=1.0, longest_story_seconds=800.0,
                    working_memory_mib=256, runtime_gib=0.6, lowlevel_gib=0.8,
                    training_gib=2.7, select_before_stacking=False, lowlevel_dims=299,
                    run_volumes=None, run_columns=None, surface_runs=False):
    """Peak memory, stage by stage, of ``sk-braintune evaluate`` or ``tune``.

    A sum of the arrays each stage holds at once, from the sizes of the data (the terms are
    listed in ``terms``). Responses read lazily (:func:`~sk_braintune.datasets.load_lebel2023`)
    cost nothing until the commands stack them into one ``(n_trs, n_voxels)`` float32 matrix.
    The loaders of volumes and surfaces (:func:`~sk_braintune.datasets.load_bids` and those
    built on it) read each run once, whole, into memory: give their runs' sizes
    (``run_volumes``, ``run_columns``) and the record they hold (the stories' responses and
    repeats) is counted from the load until ``evaluate`` has stacked the responses.

    Parameters
    ----------
    n_trs : int
        Response rows of all loaded stories.
    n_voxels : int
    audio_seconds : float
        Total duration of the loaded stories' audio (kept at 16 kHz float32).
    command : {"evaluate", "tune"}, default="evaluate"
    n_test_trs : int, optional
        Rows of the test story (default ``n_trs / 27``).
    n_repeats : int, default=10
        Repeats of the test story (read for the noise ceiling).
    n_layers, hidden_size : int, default=3, 32
        Hidden states extracted and their width.
    n_delays : int, default=4
        FIR delays of the encoding model.
    n_alphas : int, optional
        Ridge penalties scored (default: :class:`~sk_braintune.RidgeEncoder`'s grid, 20).
    selected_fraction : float, default=1.0
        Fraction of voxels the tuner trains on (above ``--min-ceiling``).
    longest_story_seconds : float, default=800
        For the transient of decoding and resampling one 44.1 kHz stereo WAV.
    working_memory_mib : float, default=256
        The ridge's ``working_memory``.
    runtime_gib : float, default=0.6
        Python, torch and the libraries (measured).
    lowlevel_gib : float, default=0.8
        The low-level feature spaces and their residualisation (measured on the simulated
        ds003020; it grows with the stories, not the voxels).
    training_gib : float, default=2.7
        The tuner's activations, gradients and optimiser state, besides its two copies of the
        selected targets (float32 and standardised), which are added from the sizes. Measured
        for the benchmark's small wav2vec2 at batch 128 and 10 s windows; a base-size model
        needs several times more: measure it with ``benchmarks/bench_tuner.py``.
    select_before_stacking : bool, default=False
        ``tune`` only: the responses are stacked for the selected voxels only (what
        :meth:`~sk_braintune.datasets.LazyStoryArray.take_columns` allows) instead of for
        all voxels and then indexed.
    lowlevel_dims : int, default=299
        Low-level features per TR before the delays (the variance partitioning's models hold
        one coefficient per delayed feature and voxel): 32 power-spectrum bands, 40 phonemes,
        200 diphones and 27 articulatory features on real data.
    run_volumes : list of int, optional
        Volumes of each run the loader reads (volume data: the selected stories' span of each
        run); None for ds003020, whose responses are read lazily.
    run_columns : int, optional
        Columns read per run before the constant, NaN or masked ones are dropped (both
        hemispheres' vertices, or the brain mask's voxels); default ``n_voxels``.
    surface_runs : bool, default=False
        The runs are GIfTI files: nibabel parses a file whole, so reading the largest run holds
        2.6 times its values at once (measured with ``benchmarks/bench_bids_scale.py``), where
        NIfTI runs are read in blocks and the largest is held twice only while its stories are
        copied out.

    Returns
    -------
    estimate : dict
        ``"stages"``: stage name -> GiB held at its peak; ``"peak_gib"``: the largest;
        ``"terms"``: term name -> GiB (the pieces summed).

    Examples
    --------
    >>> est = estimate_memory(27 * 350, 90_000, audio_seconds=27 * 710)
    >>> round(est["terms"]["responses"], 1)
    3.2
    """
    if command not in ("evaluate", "tune"):
        raise ValueError(f"command must be 'evaluate' or 'tune'; got {command!r}.")
    n_test_trs = int(n_test_trs or max(1, n_trs // 27))
    n_alphas = int(n_alphas or 20)
    f32 = 4
    terms = {
        "runtime": runtime_gib,
        "audio": audio_seconds * 16_000 * f32 / _GIB,
        # make_windows keeps a zero-padded copy of every story's waveform (evaluate then uses
        # it as the dataset's audio: held twice only while the windows are cut)
        "window_audio": audio_seconds * 16_000 * f32 / _GIB,
        # one WAV at 44.1 kHz: stereo int16, a float32 mono copy, the resampler's float64
        "audio_decode": longest_story_seconds * 44_100 * (2 * 2 + 4 + 8) / _GIB,
        "repeats": n_repeats * n_test_trs * n_voxels * f32 / _GIB,
        "responses": n_trs * n_voxels * f32 / _GIB,
        "features": n_trs * n_layers * hidden_size * f32 / _GIB,
        "ridge": (working_memory_mib * 2 ** 20 + n_voxels * (hidden_size * n_delays * f32
                                                            + n_alphas * 8 + 3 * 8)
                  + 2 * n_test_trs * n_voxels * f32) / _GIB,
        # the variance partitioning's held-out arrays in float64: responses, their centred
        # copy, the joint model's two band contributions, their sum, one centred band and a
        # product
        "test_float64": 7 * n_test_trs * n_voxels * 8 / _GIB,
        # the partitioning's joint model and the one being fitted, float32 coefficients
        "partitioning_models": (hidden_size + 2 * lowlevel_dims) * n_delays * n_voxels * f32
                               / _GIB,
        "selected_responses": selected_fraction * n_trs * n_voxels * f32 / _GIB,
        "lowlevel": lowlevel_gib,
        "training": training_gib,
    }
    base = terms["runtime"] + terms["audio"]
    record = 0.0  # responses a loader holds in memory (none when read lazily)
    if run_volumes is None:
        load = base + max(terms["audio_decode"], terms["repeats"])
    else:
        volumes = [int(v) for v in run_volumes]
        columns = int(run_columns or n_voxels)
        terms["runs"] = sum(volumes) * columns * f32 / _GIB
        terms["largest_run"] = max(volumes) * columns * f32 / _GIB
        terms["record"] = terms["responses"] + terms["repeats"]
        record = terms["record"]
        # every run is held until the stories are copied out of it; the largest one's
        # transient comes on top (a GIfTI parse, or its stories' copies)
        load = base + terms["runs"] + (1.6 if surface_runs else 1.0) * terms["largest_run"]
    stages = {"load": load, "windows": base + terms["window_audio"] + record}
    if command == "evaluate":
        # the audio is dropped once the features and the low-level features are made; then
        # the responses are stacked once (training stories first, the test story last), the
        # record's copy (if any) is dropped, and every fit reads views of them: no stage
        # copies them
        stages["features"] = base + terms["features"] + record
        stages["lowlevel_features"] = base + terms["features"] + terms["lowlevel"] + record
        held = terms["runtime"] + terms["features"] + terms["lowlevel"] + terms["responses"]
        stages["stack"] = held + record
        stages["alignment"] = held + terms["ridge"]
        stages["low_level"] = held + terms["ridge"]
        stages["partitioning"] = (held + terms["ridge"] + terms["test_float64"]
                                  + terms["partitioning_models"])
    else:
        base += terms["window_audio"]
        stacked = (terms["selected_responses"] if select_before_stacking
                   else terms["responses"] + terms["selected_responses"])
        # the tuner keeps float32 targets as given and one standardised copy
        stages["tune"] = (base + stacked + terms["training"] + terms["selected_responses"]
                          + record)
    return {"stages": stages, "peak_gib": max(stages.values()), "terms": terms}
