"""Ground-truth manoeuvres of synthetic road users, and the true label of each window.

``trajemb synth`` knows what every road user was built to do: the route it follows (a turn through a
junction connector, a U-turn through a median loop, a lane change that blends from one lane into the
next, or plain lane following) and, along that route, where each manoeuvre starts and ends (arc
lengths in metres). It writes that beside each scenario as a sidecar table
``trajemb_truth_<scenario_id>.parquet`` (one row per track); the AV2 parquet and map files stay exact.

Rule for a window's ``true_manoeuvre`` (first match wins), from the noise-free progress along the
route during the window:

1. ``stationary``: the road user advances less than ``STATIONARY_MAX_SPEED_MPS`` times the window's
   duration (the same speed as the heuristic's, so that the class means the same thing);
2. a manoeuvre of which the window shows at least ``MIN_SPAN_COVERAGE`` (half) of its length, in the
   order U-turn, left / right turn, lane change (a lane change followed by a turn in one window is the
   turn);
3. ``straight`` otherwise: lane following, including bends of the road however sharp, and windows
   that show less than half of a manoeuvre.

Windows without a sidecar (all real AV2 data) are ``unknown``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trajemb.core.errors import DataError
from trajemb.data.labels import STATIONARY_MAX_SPEED_MPS
from trajemb.data.schema import STEP_S, UNKNOWN_MANOEUVRE, DirectionClass, IntArray, ManoeuvreTruth, StrArray

TRUTH_PREFIX = "trajemb_truth_"
#: Key in the sidecar's parquet metadata (its format version).
TRUTH_METADATA_KEY = b"trajemb_truth"
TRUTH_FORMAT = b"1"
#: Share of a manoeuvre's length a window must show to carry its label.
MIN_SPAN_COVERAGE = 0.5
#: Manoeuvres a route can hold, highest priority first (rule 2 above).
SPAN_PRIORITY: tuple[str, ...] = (
    DirectionClass.U_TURN.value,
    DirectionClass.LEFT.value,
    DirectionClass.RIGHT.value,
    DirectionClass.LANE_CHANGE_LEFT.value,
    DirectionClass.LANE_CHANGE_RIGHT.value,
)
#: Route kinds the generator writes (``route_kind``).
ROUTE_KINDS: tuple[str, ...] = ("straight", *SPAN_PRIORITY, "walk", "cross", "parked", "static")
#: Most manoeuvres one route holds (a lane change, then a turn): bounds what a sidecar may ask for.
MAX_SPANS = 8

TRUTH_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("route_kind", pa.string()),
        ("route_s_m", pa.list_(pa.float64())),
        ("span_kind", pa.list_(pa.string())),
        ("span_start_m", pa.list_(pa.float64())),
        ("span_end_m", pa.list_(pa.float64())),
    ]
)


def truth_path_for(scenario_path: Path) -> Path:
    """The sidecar ``trajemb_truth_<id>.parquet`` beside a ``scenario_<id>.parquet``."""
    scenario_id = Path(scenario_path).stem.removeprefix("scenario_")
    return Path(scenario_path).with_name(f"{TRUTH_PREFIX}{scenario_id}.parquet")


def read_truth(path: Path, track_ids: StrArray, num_steps: int) -> ManoeuvreTruth:
    """Read a sidecar and align it with ``track_ids`` (the ``TrackSet``'s order).

    Raises:
        DataError: unreadable file, other columns or format, a track of the scenario missing from it,
            route progress of another length than the scenario or not finite where given, unknown kinds.
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise DataError(f"{path}: not a regular file")
        parquet = pq.ParquetFile(path)
        if (parquet.schema_arrow.metadata or {}).get(TRUTH_METADATA_KEY) != TRUTH_FORMAT:
            raise DataError(f"{path}: not a trajemb truth sidecar of format {TRUTH_FORMAT.decode()}")
        if not parquet.schema_arrow.remove_metadata().equals(TRUTH_SCHEMA):
            raise DataError(f"{path}: truth sidecar columns {parquet.schema_arrow.names} are not ours")
        table = parquet.read(use_threads=False)  # threads cost more than they give on files this small
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable truth sidecar ({exc})") from exc
    rows = {tid: i for i, tid in enumerate(table.column("track_id").to_pylist())}
    missing = [t for t in track_ids.tolist() if t not in rows]
    if missing or len(rows) != table.num_rows:
        detail = f"track {missing[0]!r} is missing" if missing else "a track id appears twice"
        raise DataError(f"{path}: truth sidecar does not match its scenario ({detail})")
    order = np.asarray([rows[t] for t in track_ids.tolist()], dtype=np.int64)
    A = len(order)
    # Column by column, the rows of ``order`` only: list columns as their lengths and the flat values
    # of those rows (nulls read as NaN, and as "None" among strings, as a Python list of them would give).
    kinds = np.asarray(_values(table.column("route_kind"))[order], dtype=np.str_)
    unknown = sorted(set(kinds.tolist()) - set(ROUTE_KINDS))
    if unknown:
        raise DataError(f"{path}: unknown route kind(s) {unknown[:3]}; expected {', '.join(ROUTE_KINDS)}")
    s_column = table.column("route_s_m").combine_chunks()
    s_lengths = _list_lengths(s_column)[order]
    if (s_lengths != num_steps).any():
        raise DataError(f"{path}: route progress is not {num_steps} steps long for every track")
    route_s = _list_values(s_column, order, s_lengths).astype(np.float64).reshape(A, num_steps)
    span_columns = [table.column(c).combine_chunks() for c in ("span_kind", "span_start_m", "span_end_m")]
    lengths = [_list_lengths(c)[order] for c in span_columns]
    E = int(np.maximum(lengths[0], 0).max(initial=0))
    if E > MAX_SPANS:
        raise DataError(f"{path}: a route with {E} manoeuvres (at most {MAX_SPANS})")
    unequal = (lengths[0] < 0) | (lengths[0] != lengths[1]) | (lengths[0] != lengths[2])
    if unequal.any():
        a = int(np.flatnonzero(unequal)[0])
        raise DataError(f"{path}: manoeuvre lists of unequal length for track {track_ids[a]!r}")
    span_kind = np.full((A, E), "", dtype="<U32")
    span_start = np.full((A, E), np.nan)
    span_end = np.full((A, E), np.nan)
    slot = np.arange(E)[None, :] < lengths[0][:, None]  # (A, E) used slots, row-major as the flat values
    span_kind[slot] = np.asarray(_list_values(span_columns[0], order, lengths[0]), dtype=np.str_)
    span_start[slot] = _list_values(span_columns[1], order, lengths[0]).astype(np.float64)
    span_end[slot] = _list_values(span_columns[2], order, lengths[0]).astype(np.float64)
    bad_kind = sorted(set(span_kind[span_kind != ""].tolist()) - set(SPAN_PRIORITY))
    if bad_kind:
        raise DataError(f"{path}: unknown manoeuvre kind(s) {bad_kind[:3]}")
    used = span_kind != ""
    finite = np.isfinite(span_start) & np.isfinite(span_end)
    if (used & ~(finite & (span_end > span_start))).any():
        raise DataError(f"{path}: a manoeuvre with a non-finite or empty extent")
    if not np.isfinite(route_s[~np.isnan(route_s)]).all():
        raise DataError(f"{path}: infinite route progress")
    return ManoeuvreTruth(kinds, route_s, span_kind.astype(np.str_), span_start, span_end)


def _values(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The values of an arrow array as numpy (strings as Python objects, nulls as None or NaN)."""
    return np.asarray(array.to_numpy(zero_copy_only=False))


def _list_lengths(column: pa.ListArray) -> IntArray:
    """(A,) number of items in each row of a list column, -1 where the row is null."""
    offsets = np.asarray(column.offsets, dtype=np.int64)
    lengths: IntArray = offsets[1:] - offsets[:-1]
    if column.null_count:
        lengths[np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = -1
    return lengths


def _list_values(column: pa.ListArray, rows: IntArray, lengths: IntArray) -> np.ndarray:
    """The items of ``rows`` (none of them null, ``lengths`` items each) of a list column, row after row."""
    first = np.asarray(column.offsets, dtype=np.int64)[rows]
    index = np.repeat(first - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
    return _values(column.values)[index]


def window_true_manoeuvre(
    truth: ManoeuvreTruth | None, track_idx: IntArray, start_step: IntArray, num_steps: int
) -> StrArray:
    """The true label of each window (rule in the module docstring).

    Args:
        truth: the scenario's ground truth, or None (every window ``unknown``).
        track_idx: (W,) row of each window's track in ``truth``.
        start_step: (W,) first step of each window.
        num_steps: T.

    Returns:
        (W,) DirectionClass values, or ``unknown``.
    """
    W = len(track_idx)
    if truth is None:
        return np.repeat(np.asarray([UNKNOWN_MANOEUVRE], dtype=np.str_), W)
    s_first = truth.route_s_m[track_idx, start_step]
    s_last = truth.route_s_m[track_idx, start_step + num_steps - 1]
    labels = np.full(W, DirectionClass.STRAIGHT.value, dtype="<U32")
    if truth.span_kind.shape[1]:
        kind = truth.span_kind[track_idx]  # (W, E)
        lo, hi = truth.span_start_m[track_idx], truth.span_end_m[track_idx]
        overlap = np.minimum(s_last[:, None], hi) - np.maximum(s_first[:, None], lo)
        covered = (kind != "") & (overlap >= MIN_SPAN_COVERAGE * (hi - lo))
        for name in reversed(SPAN_PRIORITY):  # later assignments win: highest priority last
            labels[(covered & (kind == name)).any(axis=1)] = name
    duration_s = (num_steps - 1) * STEP_S
    stationary = (s_last - s_first) < STATIONARY_MAX_SPEED_MPS * duration_s
    labels[stationary] = DirectionClass.STATIONARY.value
    return labels.astype(np.str_)
