"""Names from files stay one path component; joined paths stay inside their root, symlinks included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trajemb.core.errors import DataError
from trajemb.core.paths import MAX_COMPONENT_BYTES, is_safe_component, resolve_inside, safe_component


@pytest.mark.parametrize(
    "name",
    [
        "compact-cosine-d16",
        "0a1e6f0a-1817-4a98-b02e-db8c9327d151",
        "adcf7d18____PIT_city_57819",
        "AV",
        "größe",
        "车辆",
        "a.b",
        ".hidden",
        "x" * MAX_COMPONENT_BYTES,
    ],
)
def test_plain_names_pass(name: str) -> None:
    assert safe_component(name, "name") == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        (".", "names a folder"),
        ("..", "names a folder"),
        ("../../../x", "separator '/'"),
        ("/etc/passwd", "separator '/'"),
        ("a\\b", "separator '\\\\\\\\'"),
        ("C:evil", "separator ':'"),
        ("a\0b", "U\\+0000"),
        ("line\nbreak", "U\\+000A"),
        ("rtl\u202eoverride", "U\\+202E"),
        ("para\u2029sep", "U\\+2029"),
        (" lead", "white space"),
        ("trail.", "ends with a dot"),
        ("NUL.json", "device name"),
        ("com1", "device name"),
        ("x" * (MAX_COMPONENT_BYTES + 1), "longer than"),
        ("é" * (MAX_COMPONENT_BYTES // 2 + 1), "longer than"),
    ],
)
def test_unsafe_names_refused(name: str, reason: str) -> None:
    with pytest.raises(DataError, match=f"model name .* cannot be used as a file name: .*{reason}"):
        safe_component(name, "model name")
    assert not is_safe_component(name)


@pytest.mark.parametrize("value", [None, 3, ["a"], {"a": 1}, b"bytes"])
def test_non_strings_refused(value: object) -> None:
    with pytest.raises(DataError, match="model name must be a string"):
        safe_component(value, "model name")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_a_safe_component_stays_one_entry_of_its_folder(name: str) -> None:
    """Whatever the text, an accepted name joined onto a folder is a direct child of that folder."""
    if not is_safe_component(name):
        return
    root = Path("/srv/root")
    joined = root / name
    assert joined.parent == root and joined.name == name
    assert os.path.normpath(joined) == str(joined)


def test_resolve_inside(tmp_path: Path) -> None:
    (tmp_path / "models" / "a").mkdir(parents=True)
    assert resolve_inside(tmp_path, "models/a/index.faiss") == tmp_path.resolve() / "models/a/index.faiss"
    for bad in (
        "../x",
        "models/../../x",
        "/etc/passwd",
        "C:\\x",
        "\\\\server\\share",
        "",
        "a//b",
        "models/./a",
    ):
        with pytest.raises(DataError):
            resolve_inside(tmp_path, bad)


def test_resolve_inside_refuses_symlinks_out(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    root.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("x")
    (root / "report.json").symlink_to(outside)
    (root / "models").symlink_to(tmp_path)
    with pytest.raises(DataError, match="leads out of"):
        resolve_inside(root, "report.json")
    with pytest.raises(DataError, match="leads out of"):
        resolve_inside(root, "models/secret.txt")
    (root / "inner").mkdir()
    (root / "alias").symlink_to(root / "inner")
    assert resolve_inside(root, "alias") == (root / "inner").resolve()  # links within the root are fine
