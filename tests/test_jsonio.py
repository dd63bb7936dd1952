"""JSON files read back as untrusted input: anything but a JSON object is one DataError."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trajemb.core.errors import DataError
from trajemb.core.jsonio import read_json_object

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


def test_object_round_trip(tmp_path: Path) -> None:
    (tmp_path / "card.json").write_text('{"name": "m", "metrics": {"a": 1.5}}')
    assert read_json_object(tmp_path / "card.json", "model card") == {"name": "m", "metrics": {"a": 1.5}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"name"', "must be a JSON object, got str"),
        (b"null", "must be a JSON object, got NoneType"),
        (b"\xff\xfe\x00garbage", "not UTF-8 text|not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not valid JSON"),
    ],
)
def test_malformed(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "card.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"card.json: the model card .*({message})"):
        read_json_object(path, "model card")


def test_missing_large_and_special_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="model card not found"):
        read_json_object(tmp_path / "none.json", "model card")
    (tmp_path / "big.json").write_text('{"a": "' + "x" * 2000 + '"}')
    with pytest.raises(DataError, match="more than the 100 allowed"):
        read_json_object(tmp_path / "big.json", "model card", max_bytes=100)
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(DataError, match="not a regular file"):  # and does not block
        read_json_object(tmp_path / "fifo.json", "model card")
    with pytest.raises(DataError, match="is a folder, not a model card"):
        read_json_object(tmp_path, "model card")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_give_an_object_or_a_data_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(data)
    try:
        value = read_json_object(path, "manifest")
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(value, dict)
