"""Results folders written as transactions, atomic writes, the file list of the manifest that
``compare`` checks, fault injection (a writer killed mid-way), and the TOML config writer."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from sk_braintune._utils import atomic_write_bytes, atomic_writer
from sk_braintune.commands import cli, report
from sk_braintune.commands.results import (
    MANIFEST_NAME,
    check_folder,
    file_hashes,
    results_folder,
    save_config,
    seal_folder,
)
from sk_braintune.exceptions import StudyInputError

ROOT = Path(__file__).resolve().parent.parent


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _snapshot(folder):
    """Every file below ``folder`` and its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _partials(folder):
    return sorted(p.name for p in Path(folder).parent.glob(f".{Path(folder).name}.partial-*"))


# -- atomic writes ----------------------------------------------------------------------------

def test_atomic_writes_from_threads_never_collide(tmp_path):
    """Eight threads writing one path: the temporary names used to be ``.{name}.{pid}.tmp``,
    shared by every thread of a process (one thread's rename took another's file)."""
    path = tmp_path / "shared.bin"
    payloads = [bytes([i]) * (1000 + 997 * i) for i in range(8)]
    errors = []

    def write(payload):
        try:
            for _ in range(40):
                atomic_write_bytes(path, payload)
        except Exception as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert path.read_bytes() in payloads  # one whole payload, never a mix
    assert os.listdir(tmp_path) == ["shared.bin"]  # no temporary file left


def test_atomic_writer_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_writer(path, "w") as f:
            f.write("new, half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["table.csv"]
    with atomic_writer(path, "w", newline="") as f:
        f.write("new\n")
    assert path.read_text() == "new\n"
    # the permissions of a plain open (mkstemp's files are private)
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# -- results folders --------------------------------------------------------------------------

def _write_results(folder, table_rows, value=1.0):
    """A small results folder as the commands write one (table, arrays, figure, manifest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sk_braintune.commands.results import save_figure, write_csv, write_results

    write_results({"table": table_rows, "voxel_scores": {"m": np.full(4, value)}}, folder)
    (folder / "family").mkdir()
    figure, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, value])
    save_figure(figure, folder / "family" / "curve.png", dpi=40)
    plt.close(figure)
    write_csv([{"roi": "a", "mean": value}], folder / "roi_summary.csv")
    report.write_manifest(report.build_manifest("demo", {"value": value}, started="t0"), folder)


def test_results_folder_is_sealed_with_every_files_sha256(tmp_path):
    out = tmp_path / "out"
    with results_folder(out) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(".out.partial-")
        assert not out.exists()  # nothing at the target until the folder is complete
        _write_results(folder, [{"model": "pretrained", "r": 0.5}])
    assert not folder.exists() and _partials(out) == []
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    files = manifest["files"]
    expected = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                      if p.is_file() and p.name != MANIFEST_NAME)
    assert sorted(files) == expected
    assert "family/curve.png" in files and "results.csv" in files
    for name, entry in files.items():  # checked against hashlib, file by file
        assert entry["sha256"] == _sha256(out / name)
        assert entry["bytes"] == (out / name).stat().st_size
    assert manifest["command"] == "demo"  # the rest of the manifest is kept
    check_folder(out)
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_failed_run_leaves_the_previous_results(tmp_path):
    out = tmp_path / "out"
    with results_folder(out) as folder:
        _write_results(folder, [{"model": "pretrained", "r": 0.5}])
    before = _snapshot(out)
    with pytest.raises(RuntimeError, match="killed by a bug"):
        with results_folder(out) as folder:
            _write_results(folder, [{"model": "pretrained", "r": 0.9}], value=2.0)
            raise RuntimeError("killed by a bug")
    assert _snapshot(out) == before and _partials(out) == []
    # a successful run replaces the folder as a whole (no file of the old one stays)
    with results_folder(out) as folder:
        report.write_manifest({"command": "tune"}, folder)
        (folder / "results.csv").write_text("model,r\nnew,1\n")
    assert sorted(_snapshot(out)) == ["manifest.json", "results.csv"]
    check_folder(out)


def test_results_folder_refuses_what_it_must_not_replace(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(StudyInputError, match="exists and is not a folder"):
        with results_folder(afile):
            pass
    with pytest.raises(StudyInputError, match="cannot write results next to"):
        with results_folder(afile / "out"):
            pass
    home = tmp_path / "someones_files"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    with pytest.raises(StudyInputError, match="not a results folder; it is left alone"):
        with results_folder(home):
            pass
    assert (home / "thesis.tex").read_text() == "precious"
    out = tmp_path / "out"
    with results_folder(out) as folder:
        report.write_manifest({"command": "tune"}, folder)
    with pytest.raises(StudyInputError, match="already holds results"):
        with results_folder(out, overwrite=False):
            pass
    (tmp_path / "empty").mkdir()
    with results_folder(tmp_path / "empty", overwrite=False) as folder:  # empty: fine
        report.write_manifest({"command": "tune"}, folder)
    assert _partials(tmp_path / "empty") == [] and _partials(out) == []


def test_stale_partial_folders_of_dead_runs_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname().split(".")[0]
    stale = tmp_path / f".out.partial-{host}-{dead.pid}-abc123"
    stale.mkdir()
    (stale / "results.csv").write_text("half")
    alive = tmp_path / f".out.partial-{host}-{os.getpid()}-def456"  # a running writer's
    alive.mkdir()
    with results_folder(tmp_path / "out") as folder:
        report.write_manifest({"command": "tune"}, folder)
    assert not stale.exists() and alive.exists()


def test_check_folder_names_what_differs(tmp_path):
    out = tmp_path / "out"
    with results_folder(out) as folder:
        _write_results(folder, [{"model": "pretrained", "r": 0.5}])
    check_folder(out)
    (out / "results.csv").write_text("")  # emptied, as by a writer killed mid-way
    (out / "roi_summary.csv").unlink()
    (out / "family" / "new_figure.png").write_bytes(b"png")
    with pytest.raises(StudyInputError) as info:
        check_folder(out)
    message = str(info.value)
    assert "\n" not in message and f"results folder {out} does not match" in message
    assert "roi_summary.csv missing" in message and "results.csv changed" in message
    assert "family/new_figure.png not listed" in message
    unsealed = tmp_path / "unsealed"
    unsealed.mkdir()
    report.write_manifest({"command": "tune"}, unsealed)
    with pytest.raises(StudyInputError, match="lists no files: the run that wrote"):
        check_folder(unsealed)
    seal_folder(unsealed)
    check_folder(unsealed)
    assert file_hashes(unsealed) == {}


def test_compare_refuses_a_folder_that_does_not_match_its_manifest(tmp_path, capsys):
    for name in ("a", "b"):
        with results_folder(tmp_path / name) as folder:
            _write_results(folder, [{"model": "pretrained", "r": 0.5}])
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    capsys.readouterr()
    (tmp_path / "b" / "results.csv").write_text("model,r\npretrained,0.7\n")
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "manifest.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results.csv changed" in err
    assert err.startswith("sk-braintune compare: error: results folder")
    (tmp_path / "a" / MANIFEST_NAME).write_text("{not json")
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


# -- fault injection: a writer killed while it writes ------------------------------------------

_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from sk_braintune.commands import report
    from sk_braintune.commands.results import results_folder, save_config, write_csv, write_results

    out, n_rows, tag = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rows = [{"model": f"{tag}-{i}", "r": i / n_rows, "note": "x" * 40} for i in range(n_rows)]
    with results_folder(out) as folder:
        save_config({"tag": tag, "rows": n_rows}, folder)
        write_results({"table": rows}, folder)
        write_csv(rows, folder / "roi_summary.csv")
        manifest = report.build_manifest("demo", {"tag": tag}, started=report.utc_now())
        report.write_manifest(manifest, folder)
        report.write_report(folder, title=tag, summary=f"run {tag}", sections=[
            report.ReportSection("Results", tables=[report.ReportTable("t", "roi_summary.csv")])])
    print("done", flush=True)
""")


def _start_writer(out, n_rows, tag):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(out), str(n_rows), tag],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run_writer(out, n_rows, tag):
    process = _start_writer(out, n_rows, tag)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()[-2000:]


def _kill_when(out, condition, process, timeout=60):
    """SIGKILL ``process`` as soon as ``condition(partial folder)`` holds; True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for partial in out.parent.glob(f".{out.name}.partial-*"):
            try:
                if condition(partial):
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=30)
                    return True
            except FileNotFoundError:
                pass
        time.sleep(0.001)
    process.wait(timeout=60)
    return False


def _writing_results_csv(partial):
    return any(p.name.startswith(".results.csv.") for p in partial.iterdir())


def _manifest_written(partial):
    return (partial / MANIFEST_NAME).is_file()


@pytest.mark.parametrize("moment", [_writing_results_csv, _manifest_written])
def test_a_writer_killed_mid_way_leaves_the_old_results(tmp_path, capsys, moment):
    """SIGKILL while ``results.csv`` is half written, or once the manifest is there but not the
    file list: the folder stays the old run's, whole, and ``compare`` still agrees with a copy
    of it; the killed run's leftover is hidden, refused by ``compare`` and removed next time."""
    out = tmp_path / "out"
    _run_writer(out, 10, "old")
    old = _snapshot(out)
    _run_writer(tmp_path / "old_copy", 10, "old")
    process = _start_writer(out, 100_000, "new")  # results.csv of ~6 MB: a while to write
    assert _kill_when(out, moment, process), "the writer finished before it could be killed"
    assert process.returncode == -signal.SIGKILL
    assert _snapshot(out) == old  # the old results, every file, byte for byte
    check_folder(out)
    assert cli.main(["compare", str(tmp_path / "old_copy"), str(out)]) == 0
    (partial,) = out.parent.glob(".out.partial-*")  # the killed run's, never at the target
    assert cli.main(["compare", str(out), str(partial)]) == 2
    assert "lists no files" in capsys.readouterr().err or not (partial / MANIFEST_NAME).exists()
    _run_writer(out, 10, "new")  # the next run completes and clears the leftover
    assert list(out.parent.glob(".out.partial-*")) == []
    check_folder(out)
    assert "new-0" in (out / "results.csv").read_text()
    assert cli.main(["compare", str(tmp_path / "old_copy"), str(out)]) == 1  # tag differs


@pytest.mark.slow
def test_writers_killed_at_random_moments_leave_old_or_new_never_a_mix(tmp_path):
    """Killed at eight moments spread over a run: each time the folder is one whole run."""
    out = tmp_path / "out"
    _run_writer(out, 10, "old")
    old_csv = (out / "results.csv").read_text()
    rng = np.random.default_rng(0)
    for delay in rng.uniform(0.0, 3.0, size=8):
        process = _start_writer(out, 30_000, "new")
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        check_folder(out)  # whichever run it holds, its files are the manifest's
        text = (out / "results.csv").read_text()
        assert text == old_csv or (text.count("\n") == 30_001 and "new-29999" in text)
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        assert manifest["settings"]["tag"] == ("old" if text == old_csv else "new")
    assert len(list(out.parent.glob(".out.partial-*"))) <= 1


def test_a_write_that_raises_mid_way_leaves_the_old_results(tmp_path, monkeypatch):
    """In process: the CSV writer fails after half of its rows (a full disk)."""
    from sk_braintune.commands import results

    out = tmp_path / "out"
    with results_folder(out) as folder:
        _write_results(folder, [{"model": "pretrained", "r": 0.5}])
    before = _snapshot(out)
    real_writerows = __import__("csv").DictWriter.writerows

    def failing_writerows(self, rows):
        rows = list(rows)
        real_writerows(self, rows[: len(rows) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.csv.DictWriter, "writerows", failing_writerows)
    with pytest.raises(OSError, match="No space left"):
        with results_folder(out) as folder:
            _write_results(folder, [{"model": f"m{i}", "r": i} for i in range(100)], value=3.0)
    assert _snapshot(out) == before and _partials(out) == []


# -- config.toml ------------------------------------------------------------------------------

def test_saved_config_loads_back_to_the_same_values(tmp_path):
    config = {"seed": 3, "window": 6.5, "quick": True, "name": 'a "quoted" name',
              "output": Path("results/run 1"), "subject": ("UTS01", "UTS02"), "missing": None,
              "study": {"window": 4.0, "tuner": {"lr_head": 0.01, "layers": [1, 2]},
                        "controls": [{"kind": "random-fMRI", "seed": 1},
                                     {"kind": "block-permuted", "block": 10}]},
              "scores": np.array([0.5, 0.25]), "count": np.int64(7)}
    path = save_config(config, tmp_path)
    with open(path, "rb") as f:
        loaded = tomllib.load(f)
    assert loaded == {"seed": 3, "window": 6.5, "quick": True, "name": 'a "quoted" name',
                      "output": "results/run 1", "subject": ["UTS01", "UTS02"],
                      "study": {"window": 4.0, "tuner": {"lr_head": 0.01, "layers": [1, 2]},
                                "controls": [{"kind": "random-fMRI", "seed": 1},
                                             {"kind": "block-permuted", "block": 10}]},
                      "scores": [0.5, 0.25], "count": 7}
    with pytest.raises(ValueError, match=r"config.subject: TOML has no null"):
        save_config({"subject": ["UTS01", None]}, tmp_path)
