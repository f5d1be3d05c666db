"""Datasets with several participants: pick one listener, or cut (window, participant) rows.

A dataset with several participants (the built-in one with ``n_participants > 1``, or
:func:`~sk_braintune.datasets.load_lebel2023` for several subjects) follows the single-participant
contract and adds:

- ``participants``: tuple of participant ids (length 1 for one participant);
- ``participant_data``: participant -> Bunch with that participant's ``responses``, ``repeats``
  and ``noise_ceiling`` (optionally its own ``ground_truth``), all over one common voxel space.

The top-level ``responses``, ``repeats`` and ``noise_ceiling`` are those of ``participants[0]``.
Everything else (audio, words, TR times, split, voxel labels) is shared by all participants,
because everyone heard the same stories.

Only NumPy is imported at module level.
"""

from __future__ import annotations

import numpy as np

from ..windows import AudioWindows, dataset_stories, make_windows

__all__ = ["dataset_participants", "select_participant", "participant_windows"]

# Fields that belong to one participant; select_participant swaps them at the top level.
_PARTICIPANT_FIELDS = ("responses", "repeats", "noise_ceiling")


def dataset_participants(data):
    """The participant ids of a dataset, and the per-participant data.

    A dataset without ``participants`` (made before the field existed) counts as one participant
    whose data are the top-level fields.

    Parameters
    ----------
    data : sklearn.utils.Bunch
        A dataset following the contract.

    Returns
    -------
    participants : tuple of str
    participant_data : dict of str to Bunch
        Participant -> Bunch with at least ``responses``, ``repeats`` and ``noise_ceiling``.
    """
    from sklearn.utils import Bunch

    participants = tuple(data.get("participants", None) or ("P01",))
    per = data.get("participant_data", None)
    if per is None:
        if len(participants) != 1:
            raise ValueError(f"the dataset names {len(participants)} participants but has no "
                             "participant_data; every participant needs its own responses")
        per = {participants[0]: Bunch(**{f: data.get(f) for f in _PARTICIPANT_FIELDS})}
    missing = [p for p in participants if p not in per]
    if missing:
        raise ValueError(f"participant_data lacks participants {missing} listed in "
                         f"data.participants={participants}")
    return participants, per


def _check_participant(participant, participants):
    if participant not in participants:
        raise ValueError(f"unknown participant {participant!r}; the dataset has "
                         f"{list(participants)}")


def select_participant(data, participant):
    """The dataset as one participant sees it.

    Parameters
    ----------
    data : sklearn.utils.Bunch
        A dataset following the contract (one or several participants).
    participant : str
        One of ``data.participants``.

    Returns
    -------
    dataset : sklearn.utils.Bunch
        A shallow copy of ``data`` whose top-level ``responses``, ``repeats``,
        ``noise_ceiling`` and (when it has its own) ``column_index`` are that participant's
        (and, when it has its own ``ground_truth``, the top-level ``ground_truth`` entries it
        holds, e.g. its voxel weights); ``participants`` is ``(participant,)`` and
        ``participant_data`` holds only that participant. Audio, words, TR times, split and
        voxel labels are shared (not copied).

    Raises
    ------
    ValueError
        For a participant the dataset does not have.
    """
    from sklearn.utils import Bunch

    participants, per = dataset_participants(data)
    _check_participant(participant, participants)
    own = per[participant]
    out = Bunch(**data)
    for field in _PARTICIPANT_FIELDS:
        out[field] = own[field]
    if own.get("column_index") is not None:  # the participant's own voxel places (brain maps)
        out["column_index"] = own["column_index"]
    if own.get("ground_truth") is not None:
        # the participant's own weights and noise-free signal over the shared latent features
        out["ground_truth"] = {**(data.get("ground_truth") or {}), **own["ground_truth"]}
    out["participants"] = (participant,)
    out["participant_data"] = {participant: own}
    return out


def participant_windows(data, stories, window, participants=None):
    """Audio windows and responses of (window, participant) rows, zero copy.

    Parameters
    ----------
    data : sklearn.utils.Bunch
        A dataset following the contract (one or several participants).
    stories : list of str or str
        Stories to include, in order; a split name (``"train"``, ``"validation"``, ``"test"``)
        selects that split; ``None`` means all of ``data.stories``.
    window : float
        Window length in seconds.
    participants : list of str, optional
        Participants to include, in order; all of ``data.participants`` by default.

    Returns
    -------
    X : AudioWindows of shape (n_rows, window * sample_rate)
        Rows story by story, and within a story participant by participant (each participant's
        rows cover every TR of the story). Each story's waveform is stored once: the rows of
        all participants index the same waveform and share the window ends.
    y : ndarray of shape (n_rows, n_voxels), float32
        Each row's participant's response at that TR.
    groups : ndarray of shape (n_rows,), dtype object
        Story of each row.
    participant_labels : ndarray of shape (n_rows,), dtype object
        Participant of each row.

    Raises
    ------
    ValueError
        For unknown stories or participants, or responses whose length does not match the TRs.

    Notes
    -----
    With one participant, ``(X, y, groups)`` equal
    :func:`~sk_braintune.windows.windows_from_dataset`'s.
    """
    all_participants, per = dataset_participants(data)
    if participants is None:
        participants = list(all_participants)
    elif isinstance(participants, str):
        participants = [participants]
    else:
        participants = list(participants)
    if not participants:
        raise ValueError("participants is empty; pass None for all participants")
    for p in participants:
        _check_participant(p, all_participants)
    stories = dataset_stories(data, stories)
    for p in participants:
        for s in stories:
            n_trs, n_rows = len(data.tr_times[s]), len(per[p]["responses"][s])
            if n_rows != n_trs:
                raise ValueError(f"participant {p!r}, story {s!r}: {n_trs} TR times but "
                                 f"{n_rows} response rows")
    base = make_windows({s: data.audio[s] for s in stories},
                        {s: data.tr_times[s] for s in stories},
                        window=window, tr=data.tr, sample_rate=data.sample_rate)
    # base has the rows of one participant, story by story; repeat each story's block once per
    # participant (only index arrays grow: the waveforms stay one per story)
    starts = np.cumsum([0] + [len(data.tr_times[s]) for s in stories])
    index, labels = [], []
    n_voxels = np.shape(per[participants[0]]["responses"][stories[0]])[1:]
    # filled block by block: a list of per-story arrays plus their concatenation would hold
    # every response twice (lazily read responses are read here, one block at a time)
    y = np.empty((int(starts[-1]) * len(participants), *n_voxels), dtype=np.float32)
    row = 0
    for i, s in enumerate(stories):
        block = np.arange(starts[i], starts[i + 1])
        for p in participants:
            index.append(block)
            labels.append(np.full(block.size, p, dtype=object))
            y[row:row + block.size] = np.asarray(per[p]["responses"][s], dtype=np.float32)
            row += block.size
    index = np.concatenate(index)
    X = AudioWindows(base.waveforms, base.stories[index], base.ends[index], base.tr_times[index],
                     base.window_samples, base.sample_rate,
                     check_finite=False)  # make_windows checked the waveforms
    return X, y, X.groups.copy(), np.concatenate(labels)
