"""The feature cache under several processes filling the same entries at once."""

import multiprocessing
import warnings

import numpy as np
import pytest

from sk_braintune.features.cache import FeatureCache

N_PROCESSES = 4
KEYS = ["story-a", "story-b", "story-c"]


def _features_of(ends):
    """The 'features' of some window ends (what a job would compute), deterministic."""
    return np.sin(np.outer(ends, np.arange(1, 65)) * 1e-3).astype(np.float32)


def _add_windows(directory, worker, rounds, log_path):
    """The extractor's pattern: read an entry, compute the missing windows, write the union."""
    warnings.simplefilter("error")  # a corrupt entry would warn: fail instead
    cache = FeatureCache(directory)
    for round_ in range(rounds):
        for key in KEYS:
            with cache.locked(key):
                entry = cache.get(key)
                ends = np.empty(0, np.int64) if entry is None else entry["ends"]
                mine = np.array([1000 * worker + round_])
                missing = mine[~np.isin(mine, ends)]
                if missing.size:
                    with open(log_path, "a") as log:
                        log.write(f"{key} {int(missing[0])}\n")
                    ends = np.sort(np.concatenate([ends, missing]))
                    cache.put(key, ends=ends, features=_features_of(ends))


def _get_or_compute(directory, log_path, queue):
    warnings.simplefilter("error")
    cache = FeatureCache(directory)
    out = {}
    for key in KEYS:
        with cache.locked(key):
            entry = cache.get(key)
            if entry is None:
                with open(log_path, "a") as log:
                    log.write(f"{key}\n")
                ends = np.arange(500) + len(key)
                cache.put(key, ends=ends, features=_features_of(ends))
                entry = cache.get(key)
        out[key] = entry["features"].tobytes()
    queue.put(out)


def _hammer(directory, queue):
    """Unlocked writers and readers of one big entry: a reader sees all of it or nothing."""
    warnings.simplefilter("error")
    cache = FeatureCache(directory)
    value = _features_of(np.arange(20_000))  # 5 MB: many write() calls per entry
    seen = 0
    for _ in range(10):
        cache.put("big", features=value)
        entry = cache.get("big")
        if entry is not None:
            np.testing.assert_array_equal(entry["features"], value)
            seen += 1
    queue.put(seen)


def _run(target, args_per_process, queue=None):
    """Start one process per argument tuple; return what they put on ``queue``."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=args) for args in args_per_process]
    for process in processes:
        process.start()
    # drain the queue before joining: a process exits only once its queued data is read
    results = [queue.get(timeout=120) for _ in processes] if queue is not None else []
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return results


def test_concurrent_updates_of_the_same_entries_lose_nothing(tmp_path):
    log = tmp_path / "computed.log"
    rounds = 3
    _run(_add_windows, [(tmp_path / "cache", worker, rounds, log)
                        for worker in range(N_PROCESSES)])
    cache = FeatureCache(tmp_path / "cache")
    expected_ends = np.sort([1000 * w + r for w in range(N_PROCESSES) for r in range(rounds)])
    for key in KEYS:
        entry = cache.get(key)
        np.testing.assert_array_equal(entry["ends"], expected_ends)  # every job's windows
        np.testing.assert_array_equal(entry["features"], _features_of(expected_ends))
    # each (entry, window) computed exactly once, whichever process got there first
    lines = log.read_text().splitlines()
    assert len(lines) == len(set(lines)) == len(KEYS) * N_PROCESSES * rounds
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_concurrent_jobs_compute_each_entry_once_and_read_the_same(tmp_path):
    log = tmp_path / "computed.log"
    queue = multiprocessing.get_context("spawn").Queue()
    results = _run(_get_or_compute, [(tmp_path / "cache", log, queue)] * N_PROCESSES, queue)
    assert sorted(log.read_text().split()) == sorted(KEYS)  # one computation per entry
    for key in KEYS:
        expected = _features_of(np.arange(500) + len(key)).tobytes()
        assert all(result[key] == expected for result in results)


def test_unlocked_writers_never_expose_a_partial_entry(tmp_path):
    queue = multiprocessing.get_context("spawn").Queue()
    seen = _run(_hammer, [(tmp_path / "cache", queue)] * N_PROCESSES, queue)
    assert sum(seen) == 10 * N_PROCESSES


def test_a_corrupt_entry_is_deleted_but_a_repaired_one_is_kept(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put("k", features=np.arange(3.0))
    path = cache.path("k")
    good = path.read_bytes()
    path.write_bytes(good[:-5])
    with pytest.warns(UserWarning, match="corrupt"):
        assert cache.get("k") is None
    assert not path.exists()
    # a reader that saw a corrupt file must not delete the good one another job wrote since
    path.write_bytes(good[:-5])
    original_read = type(path).read_bytes
    calls = []

    def read_then_repair(self):
        data = original_read(self)
        if not calls:
            calls.append(1)
            self.write_bytes(good)  # another process replaces the entry right after
        return data

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(path), "read_bytes", read_then_repair)
        with pytest.warns(UserWarning, match="corrupt"):
            assert cache.get("k") is None
    np.testing.assert_array_equal(cache.get("k")["features"], np.arange(3.0))
