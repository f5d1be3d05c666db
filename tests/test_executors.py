"""Job arrays through submitit: in-process, local subprocesses, and the Slurm options."""

import functools
import math
import operator

import numpy as np
import pytest

from sk_braintune.executors import JobError, estimate_memory, job_grid, make_executor, run_jobs


def test_job_grid_is_the_cartesian_product():
    jobs = job_grid(participant=["UTS01", "UTS02"], model=["a", "b"], control=[None])
    assert jobs == [{"participant": p, "model": m, "control": None}
                    for p in ("UTS01", "UTS02") for m in ("a", "b")]
    with pytest.raises(TypeError, match="sequence"):
        job_grid(participant="UTS01")


def test_in_process_jobs_keep_their_order_and_name_the_failed_one():
    assert run_jobs(operator.neg, [3, -1, 2]) == [-3, 1, -2]
    with pytest.raises(JobError, match=r"job 1 of 3 \(-1\) failed: ValueError: math domain") \
            as info:
        run_jobs(math.sqrt, [4, -1, 9])
    assert info.value.index == 1 and isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ValueError, match="executor must be one of"):
        run_jobs(abs, [1], executor="dask")
    with pytest.raises(ValueError, match="needs folder"):
        run_jobs(abs, [1], executor="local")


def test_local_executor_runs_each_job_in_its_own_process(tmp_path):
    # each job runs in a fresh Python process: the results come back in job order, equal to
    # the in-process ones
    jobs = [np.arange(n, dtype=float) for n in (3, 1, 4)]
    function = functools.partial(np.linalg.norm, ord=2)
    local = run_jobs(function, jobs, executor="local", folder=tmp_path, time_min=5, mem_gb=1)
    assert local == [function(job) for job in jobs]
    assert local == pytest.approx([math.sqrt(5), 0.0, math.sqrt(14)])
    assert any(tmp_path.rglob("*_log.err"))  # submitit's logs, one per job


def test_local_job_failure_names_the_job_and_its_stderr(tmp_path):
    with pytest.raises(JobError, match=r"(?s)job 1 of 2 \(-1\.0; local job id .*\) failed.*"
                                       r"stderr is .*_log\.err.*math domain error") as info:
        run_jobs(math.sqrt, [4.0, -1.0], executor="local", folder=tmp_path, time_min=5,
                 mem_gb=1)
    assert info.value.index == 1 and info.value.stderr.is_file()
    assert "ValueError: math domain error" in info.value.stderr.read_text()


def test_slurm_options_reach_the_sbatch_script(tmp_path, monkeypatch):
    from submitit.slurm.slurm import SlurmExecutor

    with pytest.raises(RuntimeError, match="needs a Slurm cluster"):
        make_executor("slurm", tmp_path)
    # pretend to be on a login node (submitit looks for srun) and render the sbatch script
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    executor = make_executor("slurm", tmp_path, slurm_partition="gpu", gpus=2, time_min=90,
                             mem_gb=32, cpus_per_task=8, name="uts01-tune",
                             slurm_additional_parameters={"account": "lab"},
                             slurm_setup=["module load cuda"])
    script = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=90",
                 "#SBATCH --mem=32GB", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --job-name=uts01-tune", "#SBATCH --account=lab", "module load cuda"):
        assert line in script
    with pytest.raises(ValueError, match="slurm_\\* options need executor='slurm'"):
        make_executor("local", tmp_path, slurm_partition="gpu")
    with pytest.raises(ValueError, match="mem_gb"):
        make_executor("slurm", tmp_path, mem_gb=0)
    with pytest.raises(ValueError, match="gpus"):
        run_jobs(abs, [1], gpus=-1)


def test_memory_estimate_adds_up_the_arrays_held():
    n_trs, n_voxels, seconds = 27 * 350, 90_000, 27 * 710.0
    est = estimate_memory(n_trs, n_voxels, audio_seconds=seconds, n_test_trs=350)
    gib = 2.0 ** 30
    assert est["terms"]["responses"] == pytest.approx(n_trs * n_voxels * 4 / gib)
    assert est["terms"]["audio"] == pytest.approx(seconds * 16000 * 4 / gib)
    # the responses are held once: the alignment stage adds only the ridge's working arrays
    # (its fits take views of the training rows), the windows stage the padded audio
    stages = est["stages"]
    terms = est["terms"]
    assert stages["alignment"] == pytest.approx(
        terms["runtime"] + terms["features"] + terms["lowlevel"] + terms["responses"]
        + terms["ridge"])
    # the partitioning adds its held-out float64 arrays and two models' coefficients (the
    # joint one and the one being fitted: hidden + 2 x low-level features, 4 delays each)
    assert terms["partitioning_models"] == pytest.approx((32 + 2 * 299) * 4 * n_voxels * 4 / gib)
    assert stages["partitioning"] == pytest.approx(
        stages["alignment"] + terms["test_float64"] + terms["partitioning_models"])
    # the audio is gone when the responses are stacked
    assert stages["features"] == pytest.approx(
        terms["runtime"] + terms["audio"] + terms["features"])
    assert stages["windows"] - stages["load"] == pytest.approx(
        est["terms"]["window_audio"] - max(est["terms"]["audio_decode"],
                                           est["terms"]["repeats"]))
    assert est["peak_gib"] == max(stages.values())
    tune = estimate_memory(n_trs, n_voxels, audio_seconds=seconds, command="tune",
                           selected_fraction=0.25)
    assert tune["terms"]["selected_responses"] == pytest.approx(
        0.25 * est["terms"]["responses"])
    # stacking the selected voxels only saves the whole stacked matrix
    first = estimate_memory(n_trs, n_voxels, audio_seconds=seconds, command="tune",
                            selected_fraction=0.25, select_before_stacking=True)
    assert tune["stages"]["tune"] - first["stages"]["tune"] == pytest.approx(
        est["terms"]["responses"])
    # three times the stories: three times the responses
    bigger = estimate_memory(3 * n_trs, n_voxels, audio_seconds=3 * seconds, n_test_trs=350)
    assert bigger["terms"]["responses"] == pytest.approx(3 * est["terms"]["responses"])
    with pytest.raises(ValueError, match="command"):
        estimate_memory(n_trs, n_voxels, audio_seconds=seconds, command="fit")


def test_memory_estimate_of_runs_read_into_memory():
    # Narratives' 21styear at fsaverage6: one 2,226-volume run (the story 2,211 of them) and
    # two 300-volume presentations of the test story; 81,924 vertices read, 77,924 kept
    gib = 2.0 ** 30
    lazy = estimate_memory(2211 + 300, 77_924, audio_seconds=3800, n_test_trs=300,
                           n_repeats=2)
    est = estimate_memory(2211 + 300, 77_924, audio_seconds=3800, n_test_trs=300,
                          n_repeats=2, run_volumes=[2226, 300, 300], run_columns=81_924,
                          surface_runs=True)
    terms, stages = est["terms"], est["stages"]
    assert terms["runs"] == pytest.approx(2826 * 81_924 * 4 / gib)
    assert terms["largest_run"] == pytest.approx(2226 * 81_924 * 4 / gib)
    assert terms["record"] == pytest.approx((2511 + 2 * 300) * 77_924 * 4 / gib)
    # reading: every run, plus the GIfTI parse of the largest (2.6 times its values at once)
    assert stages["load"] == pytest.approx(
        terms["runtime"] + terms["audio"] + terms["runs"] + 1.6 * terms["largest_run"])
    volume = estimate_memory(2211 + 300, 77_924, audio_seconds=3800, n_test_trs=300,
                             n_repeats=2, run_volumes=[2226, 300, 300], run_columns=81_924)
    assert stages["load"] - volume["stages"]["load"] == pytest.approx(
        0.6 * terms["largest_run"])
    # the record is held until the responses are stacked, then dropped
    assert stages["stack"] - lazy["stages"]["stack"] == pytest.approx(terms["record"])
    assert stages["features"] - lazy["stages"]["features"] == pytest.approx(terms["record"])
    assert stages["alignment"] == pytest.approx(lazy["stages"]["alignment"])
