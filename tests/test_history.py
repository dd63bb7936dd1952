"""Histories in the frame of their last state: analytic cases, frame invariance, the augmentation frame."""

from __future__ import annotations

import numpy as np
import pytest

from trajemb.core.errors import ConfigError
from trajemb.data.history import check_history_steps, history_input, last_state, rotate, to_history_frame
from trajemb.data.schema import STEP_S


def line(
    speed_mps: float, heading_rad: float, steps: int, start: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    t = np.arange(steps) * STEP_S
    direction = np.array([np.cos(heading_rad), np.sin(heading_rad)])
    return np.asarray(start) + speed_mps * t[:, None] * direction


def test_last_state_of_a_straight_line() -> None:
    xy = line(8.0, 0.7, 30, start=(3.0, -2.0))[None]
    state = last_state(xy)
    np.testing.assert_allclose(state.xy_agent[0], xy[0, -1])
    assert state.heading_rad[0] == pytest.approx(0.7)
    np.testing.assert_allclose(state.velocity_mps[0], 8.0 * np.array([np.cos(0.7), np.sin(0.7)]), atol=1e-9)
    np.testing.assert_allclose(state.velocity_local_mps[0], [8.0, 0.0], atol=1e-9)
    local = history_input(xy, 30)[0]
    np.testing.assert_allclose(local[-1], [0.0, 0.0], atol=1e-5)  # ends at the origin ...
    np.testing.assert_allclose(local[:, 1], 0.0, atol=1e-5)  # ... on the x axis, coming from -x
    np.testing.assert_allclose(local[:, 0], -8.0 * STEP_S * np.arange(29, -1, -1), atol=1e-4)


def test_stopped_object_keeps_the_heading_it_last_moved_with() -> None:
    moving = line(5.0, -1.2, 20)
    stopped = np.concatenate([moving, np.repeat(moving[-1:], 10, axis=0)])[None]
    assert last_state(stopped).heading_rad[0] == pytest.approx(-1.2)
    np.testing.assert_allclose(last_state(stopped).velocity_mps[0], 0.0)
    parked = np.zeros((1, 30, 2))
    assert last_state(parked).heading_rad[0] == 0.0  # never moved: the window's initial heading


def test_history_input_is_the_same_in_any_agent_frame() -> None:
    rng = np.random.default_rng(0)
    xy = np.cumsum(rng.normal(0.5, 0.3, (16, 60, 2)), axis=1)
    moved = rotate(xy, np.full((16, 1), 1.1)) + np.array([40.0, -7.0])
    np.testing.assert_allclose(history_input(xy, 30), history_input(moved, 30), atol=1e-4)
    # Only the first H steps matter.
    changed = xy.copy()
    changed[:, 30:] += 100.0
    np.testing.assert_array_equal(history_input(xy, 30), history_input(changed, 30))


def test_round_trip_to_local_and_back() -> None:
    xy = np.cumsum(np.random.default_rng(1).normal(1.0, 0.5, (5, 40, 2)), axis=1)
    state = last_state(xy[:, :20])
    np.testing.assert_allclose(state.to_agent(state.to_local(xy)), xy, atol=1e-9)


def test_augmentation_frame_of_complete_histories_is_history_input() -> None:
    xy = np.cumsum(np.random.default_rng(2).normal(1.0, 0.5, (8, 30, 2)), axis=1)
    observed = to_history_frame(xy, np.ones((8, 30), dtype=bool))
    np.testing.assert_allclose(observed.xy, history_input(xy, 30), atol=1e-4)
    valid = np.ones((8, 30), dtype=bool)
    valid[:, 10:15] = False
    gappy = to_history_frame(np.where(valid[..., None], xy, np.nan), valid)
    assert np.isnan(gappy.xy[:, 10:15]).all() and np.isfinite(gappy.xy[:, 15:]).all()
    np.testing.assert_allclose(gappy.xy[:, -1], 0.0, atol=1e-9)  # the last step is observed: the origin


@pytest.mark.parametrize(("steps", "length"), [(1, 60), (60, 60), (61, 60), (True, 60), (2.5, 60)])
def test_history_steps_out_of_range(steps: object, length: int) -> None:
    with pytest.raises(ConfigError):
        check_history_steps(steps, length)  # type: ignore[arg-type]
    check_history_steps(30, 60)
    check_history_steps(59, 60)


def test_a_bank_with_a_history_model_passes_its_full_check(history_bundle) -> None:  # type: ignore[no-untyped-def]
    """The full check recomputes a sample of each model's embeddings from its checkpoint: a history
    model's from the windows' first H steps in their last-state frame, as the bundle was built."""
    from trajemb.analysis.bundle import Bundle

    bundle = Bundle(history_bundle)
    assert any(bundle.history_steps(name) is not None for name in bundle.model_names)
    bundle.verify_all()


def test_a_drawn_path_searched_by_a_history_model_says_what_it_reads(history_bundle) -> None:  # type: ignore[no-untyped-def]
    """A history model reads the first H steps of a drawn window: the notes say so (with the steps
    and seconds), and a whole-window model's notes are the drawing's alone."""
    from trajemb.analysis.bundle import Bundle
    from trajemb.serving.explore import search_sketch, sketch_notes, sketch_query

    bundle = Bundle(history_bundle)
    sketch = sketch_query(bundle, [(0.0, 0.0), (20.0, 0.0), (40.0, 6.0)])
    by_kind = {bundle.history_steps(name) is not None: name for name in bundle.model_names}
    history_model, window_model = by_kind[True], by_kind[False]
    h = bundle.history_steps(history_model)
    notes = sketch_notes(bundle, history_model, sketch)
    assert notes[: len(sketch.notes)] == sketch.notes
    assert notes[-1].startswith(f"model {history_model} reads histories: it searches by the first {h} of")
    assert f"({h * STEP_S:.1f} of {bundle.num_steps * STEP_S:.1f} s)" in notes[-1]
    assert sketch_notes(bundle, window_model, sketch) == sketch.notes
    assert len(search_sketch(bundle, history_model, sketch).rows) > 0
