"""The explorer, headless with Streamlit's AppTest: every page renders, the query changes only when a
person chooses one, settings live in the URL, data is shown as plain text. (Clicks on tables and plots
are driven in a real browser by ``test_app_browser.py``.)"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from trajemb.analysis.bundle import Bundle
from trajemb.serving.explore import short_id

from conftest import REPO_ROOT

APP = str(REPO_ROOT / "app" / "streamlit_app.py")
PAGES = (
    "page_explore.py",
    "page_space.py",
    "page_rare.py",
    "page_duplicates.py",
    "page_compare.py",
    "page_evaluation.py",
    "page_query.py",
    "page_sketch.py",
)


def start(bundle: Path, monkeypatch: pytest.MonkeyPatch, params: dict[str, str] | None = None) -> AppTest:
    monkeypatch.setenv("TRAJEMB_BUNDLE", str(bundle))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(params or {})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def app(small_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    return start(small_bundle, monkeypatch)


def neighbor_ids(app: AppTest) -> list[str]:
    frames = [d.value for d in app.dataframe if "window id" in d.value.columns]
    return frames[-1]["window id"].tolist()


def query_text(app: AppTest) -> str:
    return next(t.value for t in app.text if t.value.startswith("Query: "))


def own_type_neighbor_ids(
    app: AppTest, bundle: Bundle, k: int, collapse_eps: float | None = None
) -> list[str]:
    """The ids the library's search gives the query the page shows: k neighbours of its own object type
    under the first model, near-duplicates collapsed at ``collapse_eps`` where given."""
    from trajemb.serving.explore import NeighborOptions, search_row

    query = bundle.find_row(query_text(app).split()[1])
    own_type = (bundle.strings("object_type", [query])[0],)
    options = NeighborOptions(k=k, object_types=own_type, collapse_duplicates_eps=collapse_eps)
    return bundle.strings(
        "window_id", search_row(bundle, bundle.model_names[0], query, options).rows.tolist()
    )


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(app: AppTest, page: str) -> None:
    app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert app.title[0].value


def test_query_changes_only_when_chosen(app: AppTest) -> None:
    first = query_text(app)
    assert len(neighbor_ids(app)) == 6  # default k
    app.sidebar.slider(key="k").set_value(8).run()  # settings never move the query
    assert query_text(app) == first and len(neighbor_ids(app)) == 8
    app.button(key="random").click().run()
    second = query_text(app)
    assert second != first
    app.button(key="random").click().run()  # Random works every time, not just once
    third = query_text(app)
    assert third != second
    app.sidebar.checkbox(key="one_per_track").uncheck().run()
    app.sidebar.selectbox(key="model").set_value("fft-d4").run()
    assert query_text(app) == third
    app.button(key="back").click().run()
    assert query_text(app) == second
    app.button(key="back").click().run()
    assert query_text(app) == first


def test_query_by_id_stays_put(app: AppTest, small_bundle: Path) -> None:
    wid = Bundle(small_bundle).strings("window_id", [42])[0]
    app.segmented_control(key="pick-mode").set_value("By id").run()
    app.text_input(key="query-id").set_value(wid)
    app.button[-1].click().run()  # the form's submit button
    assert wid in query_text(app)
    app.sidebar.slider(key="k").set_value(3).run()  # the old bug: the id query jumped back here
    assert wid in query_text(app) and len(neighbor_ids(app)) == 3
    app.text_input(key="query-id").set_value("no/such")
    app.button[-1].click().run()
    assert any("not in this bundle" in a for a in alerts(app))
    assert wid in query_text(app)


def test_neighbour_filters(app: AppTest, small_bundle: Path) -> None:
    bundle = Bundle(small_bundle)
    ids = neighbor_ids(app)
    query = query_text(app).split()[1]
    tracks = [i.rsplit("/", 1)[0] for i in ids]
    assert len(set(tracks)) == len(tracks) and query.rsplit("/", 1)[0] not in tracks  # one per track, not own
    qtype = bundle.strings("object_type", [bundle.find_row(query)])[0]
    frames = [d.value for d in app.dataframe if "window id" in d.value.columns]
    assert set(frames[-1]["type"]) == {qtype}  # default: the query's object type
    assert list(frames[-1].columns) == [
        "rank",
        "scenario",
        "track",
        "start",
        "distance",
        "gap",
        "ADE (m)",
        "FDE (m)",
        "speed (m/s)",
        "direction",
        "true manoeuvre",
        "type",
        "window id",
    ]
    app.sidebar.checkbox(key="exclude_scenario").check().run()
    assert all(i.split("/")[1] != query.split("/")[1] for i in neighbor_ids(app))


def test_lists_show_ids_distances_and_every_window(app: AppTest, small_bundle: Path) -> None:
    """Issue 22, bug 4 and what people expect: every list shows scenario, track and start (rows of one
    scenario no longer look identical), the neighbour table the embedding distance and the gap between
    ranks, and the pick table sorts and pages over every matching window, not the first 500."""
    bundle = Bundle(small_bundle)
    tables = [d.value for d in app.dataframe if "window id" in d.value.columns]
    pick, neighbours = tables[0], tables[-1]
    for table in (pick, neighbours):
        assert {"scenario", "track", "start", "window id"} <= set(table.columns)
        parts = [i.split("/") for i in table["window id"]]
        assert list(table["scenario"]) == [short_id(p[1]) for p in parts]
        assert list(table["track"]) == [short_id(p[2]) for p in parts]
        assert list(table["start"]) == [int(p[3]) for p in parts]
    assert len(pick[["scenario", "track", "start"]].drop_duplicates()) == len(pick)
    assert neighbours["distance"].is_monotonic_increasing
    assert neighbours["gap"].iloc[1:].to_numpy() == pytest.approx(np.diff(neighbours["distance"]), abs=1e-5)
    speed = bundle.numbers("mean_speed_mps")
    app.selectbox(key="pick-sort").set_value("mean speed").run()
    app.toggle(key="pick-descending").set_value(True).run()
    pick = next(d.value for d in app.dataframe if "window id" in d.value.columns)
    assert pick["speed (m/s)"].iloc[0] == pytest.approx(float(speed.max()), abs=1e-4)
    pages = -(-bundle.num_windows // 200)
    app.number_input(key="pick-page").set_value(pages).run()
    pick = next(d.value for d in app.dataframe if "window id" in d.value.columns)
    assert pick["speed (m/s)"].iloc[-1] == pytest.approx(float(speed.min()), abs=1e-4)
    assert any(f"of {bundle.num_windows:,} shown" in c.value for c in app.caption)


def test_label_help_agrees_with_itself(app: AppTest) -> None:
    """Issue 22, bug 5: the help said "heading change and lateral offset" above a table whose rules read
    the map first, and cut each rule mid-sentence. Now both readings are named above a table that
    holds every rule in full."""
    from trajemb.data.labels import direction_rules

    intro = next(m.value for m in app.markdown if m.value.startswith("**Direction**"))
    assert "lane graph" in intro and "shape decides" in intro and "first that matches wins" in intro
    table = app.table[0].value
    assert list(table.columns) == ["on the map", "by shape (no map)"]
    for rule in direction_rules():
        assert (table.at[rule.name, "on the map"], table.at[rule.name, "by shape (no map)"]) == (
            rule.on_map,
            rule.by_shape,
        )


def test_settings_and_query_live_in_the_url(small_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = Bundle(small_bundle)
    wid = bundle.strings("window_id", [77])[0]
    at = start(small_bundle, monkeypatch, {"q": wid, "k": "4", "model": "fft-d4", "one": "0"})
    assert wid in query_text(at) and len(neighbor_ids(at)) == 4
    assert at.sidebar.selectbox(key="model").value == "fft-d4"
    assert not at.sidebar.checkbox(key="one_per_track").value
    at.sidebar.slider(key="k").set_value(5).run()
    assert at.query_params["k"] in ("5", ["5"]) and at.query_params["q"] in (wid, [wid])
    bad = start(small_bundle, monkeypatch, {"q": "no/such/window"})
    assert any("not in this bundle" in a for a in alerts(bad))


def test_the_query_in_the_address_survives_a_refused_bundle(
    small_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: a bundle file changed after it was written refuses the bundle with one line, and the
    address lost its query, so that a reload once the bundle was rebuilt showed another one."""
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(small_bundle, copy)
    wid = Bundle(copy).strings("window_id", [42])[0]
    at = start(copy, monkeypatch, {"q": wid, "k": "4"})
    at.sidebar.slider(key="k").set_value(5).run()  # a run after the address was read
    assert wid in query_text(at) and at.query_params["q"] in (wid, [wid])
    report = next((copy / "models").glob("*/report.json"))
    report.write_bytes(report.read_bytes() + b" ")  # changed after the bundle was written
    import cache  # the app's: its background check of the whole bundle, run here to its end

    opened = at.session_state["_opened_bundle"]
    cache._verify(opened, str(opened.root), cache.bundle_stamp(str(opened.root)))
    at.run()
    assert not at.exception and any("modified or replaced" in a for a in alerts(at)), alerts(at)
    assert at.query_params["q"] in (wid, [wid]) and at.query_params["k"] in ("5", ["5"])
    assert "model" not in at.query_params  # nothing added that the address did not say
    shutil.rmtree(copy)
    shutil.copytree(small_bundle, copy)  # rebuilt: a reload of the address shows the same query
    again = start(copy, monkeypatch, {k: at.query_params[k] for k in at.query_params})
    assert wid in query_text(again) and len(neighbor_ids(again)) == 5


def test_only_the_given_bundles_open(
    small_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link cannot open another bundle than those given on the command line, and the notice is the
    same whether the path it names exists or not (no way to probe the server's files)."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(small_bundle, other)
    notices = []
    for asked in (str(other), str(tmp_path / "no-such-bundle")):
        at = start(small_bundle, monkeypatch, {"bundle": asked})
        assert not at.sidebar.text_input  # no free path box
        assert not at.error and len(neighbor_ids(at)) == 6
        assert at.session_state["_opened_bundle"].root == small_bundle
        notices.append([w.value for w in at.warning])
    assert (
        notices[0]
        == notices[1]
        == ["The bundle named in the link is not served here; showing the one this explorer was given."]
    )
    monkeypatch.setenv("TRAJEMB_BUNDLE", f"{small_bundle}:{other}")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["bundle"] = "other"
    at.run()
    assert at.sidebar.selectbox(key="bundle").options == [small_bundle.name, "other"]
    assert at.session_state["_opened_bundle"].root == other and not at.warning


def test_the_server_listens_on_this_machine_only() -> None:
    import tomllib

    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
    assert config["server"]["maxUploadSize"] == 64


def test_served_roots_do_not_follow_links_out(
    small_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    root = tmp_path / "served"
    root.mkdir()
    shutil.copytree(small_bundle, root / "inside")
    (root / "escape").symlink_to(small_bundle, target_is_directory=True)  # a bundle outside the root
    (root / "alias").symlink_to(root / "inside", target_is_directory=True)  # inside: fine
    (root / ".hidden").mkdir()
    monkeypatch.delenv("TRAJEMB_BUNDLE", raising=False)
    monkeypatch.setenv("TRAJEMB_BUNDLE_ROOTS", str(root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["bundle"] = str(small_bundle)
    at.run()
    assert sorted(at.sidebar.selectbox(key="bundle").options) == ["alias", "inside"]
    assert at.session_state["_opened_bundle"].root != small_bundle
    assert any("not served here" in w.value for w in at.warning)


def test_a_changed_or_rebuilt_bundle_is_opened_again(
    small_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes changed in place after their first check are checked again (and refused), and a bundle
    rebuilt after an error opens without restarting the explorer."""
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(small_bundle, copy)
    at = start(copy, monkeypatch)
    assert len(neighbor_ids(at)) == 6
    xy = copy / "windows" / "xy_agent.npy"
    data = bytearray(xy.read_bytes())
    data[-64:] = bytes(64)  # in place: same inode, same size
    xy.write_bytes(bytes(data))
    at.run()
    assert not at.exception and any("does not match the bundle manifest" in a for a in alerts(at))
    shutil.rmtree(copy)
    shutil.copytree(small_bundle, copy)  # rebuilt
    at.run()
    assert not at.exception and not at.error and len(neighbor_ids(at)) == 6


def test_own_query_shows_what_was_parsed(app: AppTest) -> None:
    app.switch_page("page_query.py").run()
    assert not app.error
    summary = next(d.value for d in app.dataframe if "points" in d.value.columns)
    assert summary["points"].iloc[0] == 5 and summary["input"].iloc[0] == "typed points"
    assert summary["length (m)"].iloc[0] > 40 and summary["direction"].iloc[0] in ("left", "straight")
    assert len(neighbor_ids(app)) == 6
    app.text_area(key="points").set_value("x,y\n1,2\n3,banana").run()
    assert any("Cannot use these points" in a and "must be numbers" in a for a in alerts(app))
    app.segmented_control(key="query-mode").set_value("Upload a CSV").run()
    assert not app.error and any("Choose a file" in i.value for i in app.info)  # the typed text is not used


def test_own_query_says_how_long_the_drive_was(app: AppTest) -> None:
    """Issue 22, bug 8: 200 points of a 20 s drive at 10 m/s were squeezed into 6 s (33.7 m/s) without
    a word; the page now says what it assumed and takes the drive's duration."""
    app.switch_page("page_query.py").run()
    text = "x, y\n" + "\n".join(f"{i:.1f}, 0" for i in range(200))  # 1 m apart
    app.text_area(key="points").set_value(text).run()
    summary = next(d.value for d in app.dataframe if "points" in d.value.columns)
    assert summary["mean speed (m/s)"].iloc[0] == pytest.approx(33.7, abs=0.1)
    assert any("constant speed in 5.9 s" in c.value for c in app.caption)
    app.number_input(key="duration-s").set_value(19.9).run()
    summary = next(d.value for d in app.dataframe if "points" in d.value.columns)
    assert summary["mean speed (m/s)"].iloc[0] == pytest.approx(10.0, abs=0.05)
    assert any("over 19.9 s: its first 5.9 s" in c.value for c in app.caption)


def test_own_query_faster_than_any_road_user_is_one_line(app: AppTest) -> None:
    """A new user typed 0,0 and 99999,0 and was served neighbours 49.9 km away at 16,949 m/s."""
    app.switch_page("page_query.py").run()
    app.text_area(key="points").set_value("x,y\n0,0\n99999,0").run()
    assert not app.exception
    errors = alerts(app)
    assert len(errors) == 1 and "faster than any road user" in errors[0] and "\n" not in errors[0]
    assert not [d for d in app.dataframe if "window id" in d.value.columns]  # no neighbours served


def test_every_k_the_explorer_offers_has_its_own_rank_colours(monkeypatch: pytest.MonkeyPatch) -> None:
    """The palette's properties are checked up to 20 ranks (tests/test_viz.py): the slider's largest k
    must stay within them."""
    from trajemb.serving.viz import rank_colors

    monkeypatch.syspath_prepend(str(REPO_ROOT / "app"))
    import state

    assert state.MAX_K <= 20 and len(set(rank_colors(state.MAX_K))) == state.MAX_K


def walk(node: Any) -> Iterator[Any]:
    """Every element under ``node`` (an AppTest block), in the order the page shows them."""
    yield node
    for child in getattr(node, "children", {}).values():
        yield from walk(child)


def alerts(app: AppTest) -> list[str]:
    """Each error and warning of the page with the plain-text detail under it (``ui.alert``)."""
    shown = list(walk(app.main))
    out = []
    for i, element in enumerate(shown):
        if element.type in ("error", "warning"):
            after = shown[i + 1] if i + 1 < len(shown) else None
            detail = after.value if after is not None and after.type == "text" else ""
            out.append(f"{element.value} {detail}".strip())
    return out


HOSTILE_LINE = ":smile: **b** :red[pwned] <b>x</b> :material/home: a:b,2"


def test_errors_are_plain_text_without_invisible_characters(app: AppTest, small_bundle: Path) -> None:
    """Issue 22: error texts carried zero-width spaces after every colon (``ui.md`` broke emoji and
    colour shortcodes with them), which came along when the text was copied. Errors and notices now
    show text from the input as plain text, exactly as typed, and nothing of it as Markdown."""
    app.switch_page("page_query.py").run()
    app.text_area(key="points").set_value(f"x,y\n{HOSTILE_LINE}\n3,4").run()
    assert not app.exception
    shown = alerts(app)
    assert len(shown) == 1 and "must be numbers" in shown[0] and HOSTILE_LINE in shown[0], shown
    app.switch_page("page_explore.py").run()
    app.segmented_control(key="pick-mode").set_value("By id").run()
    app.text_input(key="query-id").set_value(HOSTILE_LINE)
    app.button[-1].click().run()
    shown = alerts(app)
    assert any("not in this bundle" in a or "Cannot use that id" in a for a in shown), shown
    for element in walk(app.main):
        value = getattr(element, "value", None)
        if isinstance(value, str):
            assert "\u200b" not in value, (element.type, value)
            if element.type in ("error", "warning", "markdown", "caption", "info"):
                assert "pwned" not in value, (element.type, value)  # data never reaches Markdown


def test_compare_side_by_side(app: AppTest) -> None:
    app.switch_page("page_compare.py").run()
    tables = [d.value for d in app.dataframe if "window id" in d.value.columns]
    assert len(tables) == 2 and all("shared" in t.columns for t in tables)
    shared = set(tables[0].loc[tables[0]["shared"] == "yes", "window id"])
    assert shared == set(tables[1].loc[tables[1]["shared"] == "yes", "window id"])
    assert shared == set(tables[0]["window id"]) & set(tables[1]["window id"])


def test_evaluation_counts_are_true(app: AppTest, small_bundle: Path) -> None:
    app.switch_page("page_evaluation.py").run()
    bundle = Bundle(small_bundle)
    caption = " ".join(c.value for c in app.caption)
    assert f"300 queries sampled among {bundle.num_windows:,} windows" in caption
    definitions = " ".join(m.value for m in app.markdown)
    for metric in (
        "minADE@5",
        "precision@10",
        "silhouette_direction",
        "mirror_confusion@10",
        "recall@10 vs exact",
    ):
        assert f"**{metric}**" in definitions
    assert "no plot against D" in caption  # one model per similarity: no plot against D


def test_evaluation_shows_per_class_mean_rank_and_robustness(app: AppTest, small_bundle: Path) -> None:
    """The report keys of issue 12 reach the page as tables: per class (true manoeuvres here), mean rank,
    robustness with its curves; the score chosen changes what the tables hold."""
    app.switch_page("page_evaluation.py").run()
    assert not app.exception, [e.value for e in app.exception]
    bundle = Bundle(small_bundle)
    model = bundle.model_names[0]
    report = bundle.report(model)
    assert report is not None

    def table(column: str) -> pd.DataFrame:
        """The table that has ``column`` (a Styler's data)."""
        values = [d.value for d in app.dataframe]
        frames = [getattr(v, "data", v) for v in values]
        return next(f for f in frames if column in f.columns)

    frame = table("hard classes")
    assert model in frame.index and "oracle_raw" in frame.index
    assert frame.at[model, "left"] == pytest.approx(report["per_class"]["left"]["minADE@5"])
    rank = table("mean rank")
    assert rank.at[model, "mean rank"] == pytest.approx(report["mean_rank"]["mean_rank"])
    robust = table("clean")  # the first perturbation (position noise) by level
    assert robust.at[model, "0.5"] == pytest.approx(report["robustness"]["noise_m"]["0.5"]["minADE@5"])
    assert "true manoeuvres" in " ".join(c.value for c in app.caption)
    assert len([c for c in app.get("plotly_chart")]) >= 4  # bars + three robustness curves
    app.radio(key="eval-class-metric").set_value("precision@10").run()
    frame = table("hard classes")
    assert frame.at[model, "left"] == pytest.approx(report["per_class"]["left"]["precision@10"])


def test_evaluation_tables_are_readable(app: AppTest) -> None:
    """Issue 22, bug 7: no table wider than the page (headers were cut, the last robustness column
    needed scrolling), no literal "None", and every row that ties for the best value is marked."""
    import re

    app.switch_page("page_evaluation.py").run()
    styled = [d for d in app.dataframe if d.proto.arrow_data.HasField("styler")]
    assert len(styled) >= 5
    for element in styled:
        frame, styler = element.value, element.proto.arrow_data.styler
        assert len(frame.columns) <= 8, list(frame.columns)
        shown = pa.ipc.open_stream(styler.display_values).read_all().to_pandas()
        assert not shown.isin(["None", "nan", "NaN"]).any().any(), shown
        assert element.proto.placeholder == "\u2013"  # a missing value is a dash, not "None"
        marked = {
            (int(r), int(c))
            for block in styler.styles.split("}")
            if "bold" in block
            for r, c in re.findall(r"_row(\d+)_col(\d+)", block)
        }
        for c, column in enumerate(frame.columns):
            rows = {r for r, cc in marked if cc == c}
            if not rows:
                continue
            values = pd.to_numeric(frame[column], errors="coerce")
            best = {round(float(values.iloc[r]), 3) for r in rows}
            assert len(best) == 1, (column, best)
            ties = {
                i
                for i, (name, v) in enumerate(values.items())
                if name not in ("oracle_raw", "random") and pd.notna(v) and round(float(v), 3) in best
            }
            assert rows == ties, column


def test_malformed_reports_leave_cells_empty(
    small_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle whose reports hold wrong types (validly hashed: a crafted bundle) shows the Evaluation
    page with empty cells, not a traceback."""
    import json
    import shutil

    from trajemb.analysis.bundle import BASELINES_FILE, MANIFEST, REPORT, model_file
    from trajemb.serving.bundle_build import BundleWriter

    root = tmp_path / "b"
    shutil.copytree(small_bundle, root)
    writer = BundleWriter(root, json.loads((root / MANIFEST).read_text()))
    name = Bundle(root).model_names[0]
    writer.write_json(
        model_file(name, REPORT),
        {
            "num_queries": "many",
            "corpus_windows": None,
            "dim": "four",
            "minADE@5": [1],
            "per_class": {"left": 3},
            "hard": "x",
            "mean_rank": {"mean_rank": "y", "database": None},
            "robustness": {"clean": [], "noise_m": {"0.5": {"minADE@5": "z"}}},
            "index": {"kind": 5},
        },
    )
    writer.write_json(BASELINES_FILE, {"oracle_raw": 1, "pca_4": {"minADE@5": "nan", "per_class": []}})
    writer.save_manifest()
    at = start(root, monkeypatch)
    at.switch_page("page_evaluation.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture(scope="module")
def hostile_bundle(
    synth_table: Path, tiny_checkpoints: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A bundle whose city and object type strings are Markdown and HTML that would fetch a URL."""
    from trajemb.analysis.evaluate import EvalConfig
    from trajemb.retrieval.projection import ProjectionConfig
    from trajemb.serving.bundle_build import BundleConfig, build_bundle

    root = tmp_path_factory.mktemp("hostile")
    table = pq.read_table(synth_table)
    n = table.num_rows
    evil = ["![x](http://127.0.0.1:9/pwned.png) <img src=http://127.0.0.1:9/i.png> **bold** :red[red]"] * n
    table = table.set_column(table.schema.get_field_index("city"), "city", pa.array(evil).dictionary_encode())
    kinds = np.where(np.arange(n) % 2 == 0, "vehicle", "<b>car</b>_*x*_")
    table = table.set_column(
        table.schema.get_field_index("object_type"), "object_type", pa.array(kinds).dictionary_encode()
    )
    import json

    from trajemb.data.store import METADATA_KEY, content_hash

    manifest = json.loads(pq.read_metadata(synth_table).metadata[METADATA_KEY])
    manifest["content_sha256"] = content_hash(table)  # as `prepare` would have written it
    pq.write_table(
        table.replace_schema_metadata({METADATA_KEY: json.dumps(manifest).encode()}), root / "t.parquet"
    )
    config = BundleConfig(
        evaluation=EvalConfig(num_queries=50), projection=ProjectionConfig(method="full"), device="cpu"
    )
    build_bundle(root / "t.parquet", tiny_checkpoints[:1], root / "b", config=config, progress=False)
    return root / "b"


def test_data_is_plain_text(hostile_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = start(hostile_bundle, monkeypatch)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        for element in (
            *at.markdown,
            *at.caption,
            *at.title,
            *at.subheader,
            *at.info,
            *at.warning,
            *at.error,
        ):
            assert "pwned" not in element.value and "<b>car" not in element.value, (page, element.value)
        for chart in at.get("plotly_chart"):
            spec = chart.proto.spec
            assert "<b>car" not in spec and "<img" not in spec, page
    at.switch_page("page_explore.py").run()
    assert "![x](http" in query_text(at)  # shown, as text


def test_served_bundles_only(small_bundle: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TRAJEMB_BUNDLE", raising=False)
    monkeypatch.setenv("TRAJEMB_BUNDLE_ROOTS", str(small_bundle.parent))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception and not at.error
    assert not at.sidebar.text_input  # no free path box
    assert at.sidebar.selectbox(key="bundle").options == [small_bundle.name]
    assert len(neighbor_ids(at)) == 6


@pytest.fixture(scope="module")
def real_bundle(mf_dir: Path, sensor_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real AV2 fixtures (motion forecasting + sensor logs) in a bundle with a shipped checkpoint."""
    from trajemb.analysis.evaluate import EvalConfig
    from trajemb.data.prepare import PrepareConfig, prepare_table
    from trajemb.serving.bundle_build import BundleConfig, build_bundle
    from trajemb.serving.pipeline import shipped_checkpoints

    root = tmp_path_factory.mktemp("real")
    config = PrepareConfig(
        av2_dirs=(str(mf_dir),), sensor_log_dirs=(str(sensor_dir),), workers=1, maps_dir=str(root / "maps")
    )
    prepare_table(config, root / "real.parquet", progress=False)
    ckpt = [c for c in shipped_checkpoints() if c.name == "compact-cosine-d16"]
    build_bundle(
        root / "real.parquet",
        ckpt,
        root / "bundle",
        root / "maps",
        BundleConfig(evaluation=EvalConfig(num_queries=200), device="cpu"),
        progress=False,
    )
    return root / "bundle"


def test_real_av2_bundle_in_the_app(real_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = start(real_bundle, monkeypatch)
    assert not at.error
    ids = neighbor_ids(at)
    assert len(ids) == 6 and all(i.startswith(("av2_motion/", "av2_sensor/")) for i in ids)
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])


def test_default_data_progress_shows_only_while_it_is_built(
    small_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first session sees each build stage; later sessions get the built data without a stale
    progress panel (elements drawn inside ``st.cache_resource`` would be replayed to every session)."""
    import logging

    monkeypatch.syspath_prepend(str(REPO_ROOT / "app"))
    import cache  # the module the app imports, so the patches below reach it

    builds: list[Path] = []

    def fake_build(cache_dir: Path, progress: bool = True, complete: bool = True) -> Path:
        builds.append(cache_dir)
        logging.getLogger("trajemb.serving.pipeline").info("building the default bundle (fake)")
        return small_bundle

    monkeypatch.delenv("TRAJEMB_BUNDLE", raising=False)
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    monkeypatch.setenv("TRAJEMB_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "build_default_bundle", fake_build)
    monkeypatch.setattr(cache, "_default_ready", {})

    def stage_lines(at: AppTest) -> list[str]:
        return [t.value for t in at.text if "building the default bundle (fake)" in t.value]

    first = AppTest.from_file(APP, default_timeout=120)
    first.run()
    assert not first.exception, [e.value for e in first.exception]
    assert len(stage_lines(first)) == 1
    second = AppTest.from_file(APP, default_timeout=120)
    second.run()
    assert not second.exception, [e.value for e in second.exception]
    assert stage_lines(second) == []
    assert neighbor_ids(second)  # the Explore page rendered on the default data
    assert builds == [tmp_path]


def test_cluster_prototypes_teach(app: AppTest, small_bundle: Path) -> None:
    """Clusters named by their dominant manoeuvre and speed, with size and class mix, each prototype
    on its own map."""
    app.switch_page("page_space.py").run()
    charts = len(app.get("plotly_chart"))
    app.toggle(key="show-prototypes").set_value(True).run()
    assert not app.exception and len(app.get("plotly_chart")) == charts + 1
    table = next(d.value for d in app.dataframe if "mix" in d.value.columns)
    assert len(table) == 8 and table["windows"].sum() == Bundle(small_bundle).num_windows
    assert table["windows"].is_monotonic_decreasing
    assert all(re.fullmatch(r"[a-z ]+ \(\d+%\)( \+ [a-z ]+ \(\d+%\))?, \d+ m/s", n) for n in table["name"])
    maps = json.loads(app.get("plotly_chart")[-1].proto.spec)
    picked = {v for t in maps["data"] if "customdata" in t for v in t["customdata"] if v is not None}
    assert len(picked) >= 8  # every prototype on its own map, pickable
    app.selectbox(key="color-by").set_value("k-means cluster").run()
    assert not app.exception


def test_embedding_space_shows_the_query_and_clears_a_selection(app: AppTest, small_bundle: Path) -> None:
    """What people expect on Embedding space: the query line with a link to its neighbours, the
    filters, and a way to clear a selection."""
    bundle = Bundle(small_bundle)
    app.switch_page("page_space.py").run()
    assert query_text(app).startswith("Query: ")
    assert any("neighbours" in str(link.proto.label) for link in app.get("page_link"))
    assert app.multiselect(key="filter-direction") is not None
    app.session_state["space_selection"] = (str(bundle.root), bundle.model_names[0], np.arange(40))
    app.run()
    assert any("Selection: 40 windows" in h.value for h in app.subheader)
    app.button(key="clear-selection").click().run()
    assert not any("Selection:" in h.value for h in app.subheader)


def test_a_query_change_checks_the_bundle_once_not_per_map(
    app: AppTest, small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22 item 10: each map of the grid opened the bundle again, and each opening checks every
    file the bundle has read for changes (at a million windows, every one of ~9,000 maps once the full
    check has run): a third of a second of every rerun. A rerun checks once, and the maps read the
    version it opened."""
    checks: list[bool] = []
    changed = Bundle.changed

    def counted(self: Bundle, every_file: bool = True) -> bool:
        checks.append(every_file)
        return changed(self, every_file)

    monkeypatch.setattr(Bundle, "changed", counted)
    monkeypatch.syspath_prepend(str(REPO_ROOT / "app"))
    import cache

    monkeypatch.setattr(cache, "FILE_CHECK_S", 0.0)  # the files on every rerun, as before the interval
    app.session_state["query_row"] = Bundle(small_bundle).num_windows - 1
    app.session_state["query_version"] = 1000
    app.run()
    assert not app.exception
    maps = json.loads(app.get("plotly_chart")[-1].proto.spec)
    assert sum(1 for t in maps["data"] if t.get("fill") == "toself") >= 1  # the maps were drawn
    assert checks == [True]


def test_an_opened_bundle_checks_its_files_every_few_seconds_its_manifest_always(
    small_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22 item 10: checking every file an opened bundle has read on every rerun (9,200 ``stat``
    calls at a million windows, 40 ms) was a sixth of a page switch on the server. Those files are
    checked at most every ``FILE_CHECK_S`` seconds; a rewritten manifest (a rebuild, a completed stage)
    and a replaced memory-mapped array are noticed on the next rerun, any other file written once the
    interval has passed."""
    import shutil

    monkeypatch.syspath_prepend(str(REPO_ROOT / "app"))
    import cache

    copy = tmp_path / "b"
    shutil.copytree(small_bundle, copy)
    at = start(copy, monkeypatch)
    monkeypatch.setattr(cache, "FILE_CHECK_S", 3600.0)

    def opened() -> Bundle:
        at.run()
        assert not at.exception and not at.error and len(neighbor_ids(at)) == 6
        bundle: Bundle = at.session_state["_opened_bundle"]
        return bundle

    first = opened()
    assert opened() is first
    (copy / "bundle.json").touch()  # the manifest rewritten: a new version, opened at once
    second = opened()
    assert second is not first
    xy = copy / "windows" / "xy_agent.npy"
    replaced = xy.with_name("replaced.npy")
    shutil.copyfile(xy, replaced)
    replaced.replace(xy)  # a mapped array replaced (the same bytes): opened again at once
    third = opened()
    assert third is not second
    read = next(f for key, f in third._files.items() if key.startswith("maps/"))
    read.path.write_bytes(read.path.read_bytes())  # a map written in place: left until the interval ends
    assert opened() is third
    monkeypatch.setattr(cache, "FILE_CHECK_S", 0.0)
    assert opened() is not third


def test_the_layout_stays_the_same_chart_from_one_query_to_the_next(app: AppTest, small_bundle: Path) -> None:
    """Issue 22 item 10: Streamlit names a chart by its figure, so a layout whose query cross and
    neighbour rings changed with every click was a new chart each time (a new WebGL context, every
    point and image drawn again: a click on the layout waited about 2 s at a million windows). The
    figure is now the same from one query to the next; the companion draws the query and its
    neighbours over it, where the projection puts them."""
    bundle = Bundle(small_bundle)
    xy = bundle.projection(bundle.model_names[0])
    assert xy is not None
    app.segmented_control(key="pick-mode").set_value("On the 2-D layout").run()

    def layout_and_marks() -> tuple[str, dict[str, Any]]:
        spec = next(c.proto.spec for c in app.get("plotly_chart") if '"scattergl"' in c.proto.spec)
        (companion,) = app.get("bidi_component")
        return spec, json.loads(companion.proto.json)["marks"]

    before, _ = layout_and_marks()
    row = bundle.num_windows - 1
    app.session_state["query_row"] = row
    app.session_state["query_version"] = 1000
    app.run()
    assert not app.exception
    after, marks = layout_and_marks()
    assert after == before
    assert marks["query"] == pytest.approx(xy[row].tolist())
    rows = [bundle.find_row(i) for i in neighbor_ids(app)]
    np.testing.assert_allclose(marks["neighbours"], xy[rows], rtol=1e-6)


def test_going_back_to_explore_shows_the_maps_built_before(
    app: AppTest, small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22 item 10: a switch back to Explore built the map grid of the same query again (40 ms at
    a million windows); it is built once per bundle version and query, and is the figure built anew."""
    import plotly.io as pio

    monkeypatch.syspath_prepend(str(REPO_ROOT / "app"))
    import cache

    maps = app.get("plotly_chart")[-1].proto.spec
    built: list[int] = []
    build = cache.map_grid_figure

    def counted(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return build(*args, **kwargs)

    monkeypatch.setattr(cache, "map_grid_figure", counted)
    app.switch_page("page_space.py").run()
    app.switch_page("page_explore.py").run()
    assert not app.exception and not built and app.get("plotly_chart")[-1].proto.spec == maps
    path, stamp = cache.stamp_of(app.session_state["_opened_bundle"])
    rows, titles, colors = [0, 5, 9], ["query: a", "#1 b", "#2 c"], ["#000000", "#E69F00", "#56B4E9"]
    args = (path, stamp, tuple(rows), tuple(titles), tuple(colors), (False, True, True), 2, 230, None)
    cached = cache.map_figure(*args)
    assert cache.map_figure(*args) is cached and len(built) == 1
    fresh = build(
        cache.map_panels(path, stamp, rows, titles, colors, [False, True, True]), columns=2, panel_height=230
    )
    assert pio.to_json(cached, validate=False) == pio.to_json(fresh, validate=False)


def test_maps_play_through_time_and_one_shows_large(app: AppTest) -> None:
    charts = len(app.get("plotly_chart"))
    app.toggle(key="playback").set_value(True).run()
    app.slider(key="playback-s").set_value(2.0).run()
    maps = app.get("plotly_chart")[-1].proto.spec
    assert '"size":13' in maps.replace(" ", "")  # where each window is at 2 s
    app.selectbox(key="large-map").set_value("#1").run()
    assert len(app.get("plotly_chart")) == charts + 1 and not app.exception


def test_corrupt_bundle_is_one_line_not_a_traceback(
    small_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(small_bundle, copy)
    xy = np.load(copy / "windows" / "xy_agent.npy")
    np.save(copy / "windows" / "xy_agent.npy", xy[::-1].copy())  # same bytes count, rows reordered
    monkeypatch.setenv("TRAJEMB_BUNDLE", str(copy))
    at = AppTest.from_file(APP, default_timeout=120)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
    at.switch_page("page_explore.py").run()
    assert any("does not match the bundle manifest" in a for a in alerts(at))


@pytest.mark.slow
def test_default_data_is_completed_in_the_background(
    synth_table: Path, tiny_checkpoints: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The explorer opens the default data before its 2-D layouts and evaluation exist and a background
    process adds them, outliving the script run that started it (a parent-death signal tied to that
    run's thread once killed it at once)."""
    import time

    from trajemb.analysis.evaluate import EvalConfig
    from trajemb.retrieval.projection import ProjectionConfig
    from trajemb.serving.bundle_build import BundleConfig, build_bundle

    staged = tmp_path / "default" / "bundle"
    config = BundleConfig(
        evaluation=EvalConfig(num_queries=50),
        projection=ProjectionConfig(method="none"),
        evaluate=False,
        device="cpu",
    )
    build_bundle(synth_table, tiny_checkpoints[:1], staged, config=config, progress=False)
    monkeypatch.syspath_prepend(str(REPO_ROOT / "app"))
    import cache

    monkeypatch.delenv("TRAJEMB_BUNDLE", raising=False)
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    monkeypatch.setenv("TRAJEMB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "build_default_bundle", lambda *a, **k: staged)
    monkeypatch.setattr(cache, "_default_ready", {})
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert neighbor_ids(at)  # searchable before the layouts exist
    deadline = time.monotonic() + 240
    while cache.completion_status(str(staged)) is not None and time.monotonic() < deadline:
        time.sleep(1)
    status = cache.completion_status(str(staged))
    assert cache.bundle_is_complete(str(staged)), status
    assert status is None
    at.switch_page("page_evaluation.py").run()
    assert not at.exception and any("queries sampled among" in c.value for c in at.caption)


def test_layout_draws_every_window_once_few_are_in_view(
    small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22, bug 11, on the server: above the limit the whole layout is an image with one pickable
    point per grid cell; zoomed to a view with fewer windows, every one is a point with a hover card,
    and no image is needed."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "app"))
    import cache

    monkeypatch.setattr(cache, "LAYOUT_POINTS_MAX", 300)
    cache.layout_view.clear()
    bundle = Bundle(small_bundle)
    model = bundle.model_names[0]
    path, stamp = str(small_bundle), cache.bundle_stamp(str(small_bundle))
    whole = cache.layout_view(path, stamp, model, "direction", (), 8, None)
    assert whole.view is None and whole.in_view == bundle.num_windows
    assert len(whole.images) == 1 and 300 < bundle.num_windows and len(whole.rows) < bundle.num_windows
    xy = bundle.projection(model)
    assert xy is not None
    centre = xy[0]
    span = (xy.max(axis=0) - xy.min(axis=0)) * 0.05
    view = (centre[0] - span[0], centre[0] + span[0], centre[1] - span[1], centre[1] + span[1])
    zoomed = cache.layout_view(path, stamp, model, "direction", (), 8, view)
    assert zoomed.view is not None and 0 < zoomed.in_view <= 300 and not zoomed.images
    assert len(zoomed.rows) == zoomed.in_view and 0 in zoomed.rows.tolist()
    cards = zoomed.cards
    assert cards["rows"] == zoomed.rows.tolist() and len(cards["paths"][0]) == 20
    ids = bundle.strings("window_id", zoomed.rows.tolist())
    assert all(c.split("/")[-1] == i.split("/")[-1] for c, i in zip(cards["ids"], ids, strict=True))
    assert json.loads(zoomed.cards_json) == cards  # what the companion receives
    # The figure, built once per view, is the one built anew.
    import plotly.io as pio

    from trajemb.serving.viz import projection_figure

    images = tuple((f"image{i}.png", extent) for i, (_, extent) in enumerate(whole.images))
    args = (path, stamp, model, "direction", (), 8, None, images, 560, "lasso")
    figure = cache.layout_figure(*args)
    assert cache.layout_figure(*args) is figure
    codes, cats = cache.layout_labels(path, stamp, model, "direction", 8)
    fresh = projection_figure(
        xy,
        codes,
        cats,
        "direction",
        whole.rows,
        list(images),
        height=560,
        dragmode="lasso",
        view=whole.full,
        hover_cards=True,
        marks=False,
        full=whole.full,
    )
    assert pio.to_json(figure, validate=False) == pio.to_json(fresh, validate=False)
    cache.layout_figure.clear()
    cache.layout_view.clear()


def test_the_first_layout_view_is_drawn_beside_the_first_page_as_the_page_draws_it(
    small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22 item 10: the first visit to Embedding space waited about 2 s at a million windows for
    the layout's image, pickable points and hover cards; they are drawn beside the first page. What
    the page then shows is what it would have drawn itself, for the view it first asks for."""
    import threading

    monkeypatch.syspath_prepend(str(REPO_ROOT / "app"))
    import cache
    import state

    defaults = state.SPECS  # the page's first view: these settings' defaults
    assert cache.FIRST_VIEW == (defaults["color-by"].default, defaults["clusters"].default)
    monkeypatch.setattr(cache, "LAYOUT_POINTS_MAX", 300)  # an image and a grid of points, as at scale
    monkeypatch.setattr(cache, "_prepared", {})  # none left by other tests' explorers
    bundle = Bundle(small_bundle)
    model = bundle.model_names[0]
    path, stamp = str(small_bundle), cache.bundle_stamp(str(small_bundle))
    first = (path, stamp, model, *cache.FIRST_VIEW[:1], tuple((n, ()) for n in state.FILTERS))
    cache.layout_view.clear()
    cache.overview_image.clear()
    drawn = cache.layout_view(*first, cache.FIRST_VIEW[1], None)
    cache.layout_view.clear()
    cache.overview_image.clear()
    warm = threading.Thread(target=cache._warm_layout, args=(path, stamp, model))  # its own priority
    warm.start()
    warm.join()
    prepared = cache._prepared[(*first, cache.FIRST_VIEW[1], None)]
    assert cache.layout_view(*first, cache.FIRST_VIEW[1], None) is prepared
    assert (*first, cache.FIRST_VIEW[1], None) not in cache._prepared  # taken, not kept twice
    assert len(prepared.images) == 1 and prepared.images == drawn.images
    np.testing.assert_array_equal(prepared.rows, drawn.rows)
    assert (prepared.full, prepared.view, prepared.in_view) == (drawn.full, drawn.view, drawn.in_view)
    assert prepared.cards_json == drawn.cards_json and json.loads(drawn.cards_json) == drawn.cards
    cache.layout_view.clear()
    cache.overview_image.clear()


# -- issue 17: every list downloads, id lists load back, rare and duplicate views, sketches ----------
def download(app: AppTest, key: str) -> tuple[str, bytes]:
    """The file name and bytes the download button ``key`` serves when clicked."""
    name, make = app.session_state["_downloads"][key]
    return name, make()


def test_neighbour_downloads_are_the_library_tables(app: AppTest, small_bundle: Path) -> None:
    """What the Explore page downloads is byte for byte what ``trajemb.analysis.export`` writes for the same
    neighbours (the CLI's ``search --out``), in both formats, under a safe, telling name."""
    from trajemb.analysis.export import results_bytes
    from trajemb.serving.explore import NeighborOptions, neighbors_frame, search_row

    bundle = Bundle(small_bundle)
    query = bundle.find_row(query_text(app).split()[1])
    assert {b.key for b in app.get("download_button")} >= {"explore-download-csv", "explore-download-parquet"}
    nb = search_row(
        bundle,
        bundle.model_names[0],
        query,
        NeighborOptions(k=6, object_types=(bundle.strings("object_type", [query])[0],)),
    )
    frame = neighbors_frame(bundle, bundle.model_names[0], nb)
    for fmt in ("csv", "parquet"):
        name, data = download(app, f"explore-download-{fmt}")
        assert re.fullmatch(r"trajemb-neighbours-[A-Za-z0-9._-]+-k6\." + fmt, name), name
        assert data == results_bytes(frame, fmt)
    table = pq.read_table(pa.BufferReader(download(app, "explore-download-parquet")[1])).to_pandas()
    assert table["window_id"].tolist() == neighbor_ids(app)


def test_rare_view_lists_the_most_unique_first(app: AppTest, small_bundle: Path) -> None:
    """The Rare page lists windows by decreasing stored uniqueness, one per track, narrowed by the label
    filters; its download is ``trajemb.serving.explore.rare_frame`` byte for byte; a row becomes the query."""
    from trajemb.analysis.export import results_bytes
    from trajemb.serving.explore import rare_frame

    bundle = Bundle(small_bundle)
    model = bundle.model_names[0]
    scores = bundle.uniqueness(model)
    assert scores is not None
    app.switch_page("page_rare.py").run()
    assert not app.exception and not app.error
    table = next(d.value for d in app.dataframe if "uniqueness" in d.value.columns)
    rows = [bundle.find_row(i) for i in table["window id"]]
    assert np.all(np.diff(scores[rows]) <= 0)  # most unique first
    assert scores[rows[0]] == pytest.approx(float(scores.max()))
    tracks = [i.rsplit("/", 1)[0] for i in table["window id"]]
    assert len(set(tracks)) == len(tracks)  # one per track
    expected = rare_frame(bundle, model, 100)
    assert table["window id"].tolist() == expected["window_id"].tolist()
    for fmt in ("csv", "parquet"):
        name, data = download(app, f"rare-download-{fmt}")
        assert name == f"trajemb-rare-{model}-top100.{fmt}"
        assert data == results_bytes(expected, fmt)
    # The label filters narrow it (and name the file).
    cities = bundle.codes("city")[1]
    app.multiselect(key="filter-city").set_value([cities[0]]).run()
    table = next(d.value for d in app.dataframe if "uniqueness" in d.value.columns)
    assert set(table["city"]) == {cities[0]}
    assert (
        table["window id"].tolist()
        == rare_frame(bundle, model, 100, {"city": (cities[0],)})["window_id"].tolist()
    )
    assert download(app, "rare-download-csv")[0] == f"trajemb-rare-{model}-top{len(table)}-{cities[0]}.csv"


def test_rare_view_computes_uniqueness_for_older_bundles(
    app: AppTest, small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle without stored uniqueness (built before it existed): the page computes it in memory,
    the same scores, and says so."""
    bundle = Bundle(small_bundle)
    stored = {m: bundle.uniqueness(m) for m in bundle.model_names}
    monkeypatch.setattr(Bundle, "uniqueness", lambda self, name: None)
    app.switch_page("page_rare.py").run()
    assert not app.exception and not app.error
    assert any("computed here" in c.value for c in app.caption)
    table = next(d.value for d in app.dataframe if "uniqueness" in d.value.columns)
    want = stored[bundle.model_names[0]]
    assert want is not None
    rows = [bundle.find_row(i) for i in table["window id"]]
    assert table["uniqueness"].to_numpy() == pytest.approx(want[rows].astype(np.float64), rel=1e-4, abs=1e-5)


def test_duplicates_view_reports_groups_and_downloads_them(app: AppTest, small_bundle: Path) -> None:
    from trajemb.analysis.duplicates import duplicate_groups, find_duplicates
    from trajemb.analysis.export import results_bytes
    from trajemb.serving.explore import duplicates_frame

    bundle = Bundle(small_bundle)
    model = bundle.model_names[0]
    app.switch_page("page_duplicates.py").run()
    assert not app.exception and not app.error
    eps = 0.01
    groups = duplicate_groups(find_duplicates(bundle, model, eps), bundle.groups)
    report = app.dataframe[0].value
    assert report["eps"].tolist() == pytest.approx([eps / 4, eps / 2, eps])
    assert report["groups"].tolist()[2] == groups.num_groups
    assert report["windows in a group"].tolist()[2] == groups.duplicated
    expected = duplicates_frame(bundle, model, eps, groups=groups)
    for fmt in ("csv", "parquet"):
        name, data = download(app, f"duplicates-download-{fmt}")
        assert name == f"trajemb-duplicates-{model}-eps0.01.{fmt}"
        assert data == results_bytes(expected, fmt)
    members = next(d.value for d in app.dataframe if "distance" in d.value.columns)
    want = expected[expected["group"] == 1]["window_id"].tolist()
    assert members["window id"].tolist() == want[: len(members)]
    app.number_input(key="duplicate_eps").set_value(0.02).run()  # eps lives in the URL
    assert app.query_params["eps"] == ["0.02"] or app.query_params["eps"] == "0.02"


def test_collapse_near_duplicates_is_a_neighbour_option_in_the_url(app: AppTest, small_bundle: Path) -> None:
    bundle = Bundle(small_bundle)
    app.sidebar.slider(key="k").set_value(12).run()
    app.sidebar.checkbox(key="collapse_duplicates").check().run()
    assert neighbor_ids(app) == own_type_neighbor_ids(app, bundle, 12, collapse_eps=0.01)
    assert neighbor_ids(app) != own_type_neighbor_ids(app, bundle, 12)
    assert app.query_params["collapse"] in ("1", ["1"])


def test_id_list_loads_back_as_gallery_and_filter(app: AppTest, small_bundle: Path) -> None:
    """A downloaded list (or a text file of ids) loads back on Explore: its windows in a table and a
    gallery, and, when asked, as a filter of the pick table; ids the bundle lacks: one line."""
    bundle = Bundle(small_bundle)
    _, data = download(app, "explore-download-parquet")
    ids = pq.read_table(pa.BufferReader(data)).column("window_id").to_pylist()
    app.segmented_control(key="pick-mode").set_value("From a list of ids").run()
    app.get("file_uploader")[0].set_value(("neighbours.parquet", data, "application/octet-stream")).run()
    assert not app.exception and not app.error
    assert any(t.value == f"{len(ids)} windows from neighbours.parquet" for t in app.text)
    listed = next(d.value for d in app.dataframe if "window id" in d.value.columns)
    assert listed["window id"].tolist() == ids
    app.toggle(key="id-filter").set_value(True).run()
    app.segmented_control(key="pick-mode").set_value("Filter and pick").run()
    pick = next(d.value for d in app.dataframe if "window id" in d.value.columns)
    assert sorted(pick["window id"]) == sorted(ids)  # the pick table holds the list's windows only
    # Text, one id per line, with two the bundle does not hold: one line, how many and which first.
    app.segmented_control(key="pick-mode").set_value("From a list of ids").run()
    text = "\n".join([ids[0], "x/no/such/1", "x/no/such/2"]).encode()
    app.get("file_uploader")[0].set_value(("mine.txt", text, "text/plain")).run()
    assert not app.exception
    shown = alerts(app)
    assert (
        len(shown) == 1 and "2 of 3 window ids are not in the bundle" in shown[0] and "no/such/1" in shown[0]
    )
    assert bundle.num_windows  # the bundle is untouched


def test_sketch_in_the_url_is_a_query(small_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A drawing (as the Sketch page keeps it in the URL) becomes ``trajemb.analysis.sketch``'s window, its
    neighbours are the library's, its download names the query ``drawn``; a drawing that cannot be
    a window is one line, and the speed control changes the window."""
    from trajemb.serving.explore import NeighborOptions, search_sketch, sketch_query

    bundle = Bundle(small_bundle)
    drawn = "0,0;10,0;20,2;30,6;40,12"
    app = start(small_bundle, monkeypatch, {"sketch": drawn})
    app.switch_page("page_sketch.py").run()
    assert not app.exception and not app.error
    points = np.array([[float(v) for v in p.split(",")] for p in drawn.split(";")])
    made = sketch_query(bundle, points)
    want = search_sketch(bundle, bundle.model_names[0], made, NeighborOptions(k=6, object_types=("vehicle",)))
    assert neighbor_ids(app) == bundle.strings("window_id", want.rows.tolist())
    frame = pd.read_csv(__import__("io").BytesIO(download(app, "sketch-download-csv")[1]))
    assert set(frame["query_window_id"]) == {"drawn"}
    assert frame["distance"].to_numpy() == pytest.approx(want.distance, abs=1e-5)
    assert any(t.value.startswith("Drawn: 5 points, 42.") for t in app.text)
    app.number_input(key="sketch-speed").set_value(5.0).run()  # 5 m/s: the first 29.5 m
    assert app.query_params["speed"] in ("5.0", ["5.0"])
    slower = search_sketch(
        bundle, bundle.model_names[0], sketch_query(bundle, points, speed_mps=5.0), want.options
    )
    assert neighbor_ids(app) == bundle.strings("window_id", slower.rows.tolist())
    app.number_input(key="sketch-speed").set_value(0.0).run()
    app.session_state["_settings"]["sketch"] = "3,3;3,3"  # one distinct point
    app.run()
    shown = alerts(app)
    assert len(shown) == 1 and "fewer than two distinct points" in shown[0]
    assert not [d for d in app.dataframe if "window id" in d.value.columns]


def test_selection_and_cluster_downloads_are_the_library_tables(app: AppTest, small_bundle: Path) -> None:
    """A box or lasso selection and a k-means cluster on Embedding space download as
    ``trajemb.serving.explore.rows_frame`` / ``cluster_frame`` (every window, not only those shown)."""
    from trajemb.analysis.export import results_bytes
    from trajemb.serving.explore import cluster_frame, cluster_labels, rows_frame

    bundle = Bundle(small_bundle)
    model = bundle.model_names[0]
    app.switch_page("page_space.py").run()
    rows = np.arange(10, 1300, 2)
    app.session_state["space_selection"] = (str(bundle.root), model, rows)
    app.run()
    name, data = download(app, "selection-download-parquet")
    assert name == f"trajemb-selection-{model}-{len(rows)}windows.parquet"
    assert data == results_bytes(rows_frame(bundle, rows, model), "parquet")
    assert len(pq.read_table(pa.BufferReader(data))) == len(rows) > 500  # more than the table shows
    app.toggle(key="show-prototypes").set_value(True).run()
    app.selectbox(key="cluster-download-choice").set_value(3).run()
    labels = cluster_labels(np.asarray(bundle.embeddings(model).all()), 8)
    name, data = download(app, "cluster-download-csv")
    assert name == f"trajemb-cluster-3-of-8-{model}.csv"
    assert data == results_bytes(cluster_frame(bundle, model, labels, 3), "csv")


def test_sketch_on_the_query_map_is_turned_into_the_agent_frame(
    small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drawn on the query's map (city frame): the path along the query's own window comes back as
    (about) that window in its agent frame, and its neighbours are the library's."""
    from trajemb.serving.explore import NeighborOptions, city_xy, search_sketch, sketch_query

    bundle = Bundle(small_bundle)
    app = start(small_bundle, monkeypatch)
    row = bundle.find_row(query_text(app).split()[1])
    app.switch_page("page_sketch.py").run()
    app.segmented_control(key="sketch-frame").set_value("city").run()
    assert app.query_params["frame"] in ("city", ["city"])
    window = city_xy(bundle, [row])[0]
    path = np.concatenate([window[:-1:6], window[-1:]])
    app.session_state["_settings"]["sketch"] = ";".join(f"{x:.2f},{y:.2f}" for x, y in path)
    app.run()
    assert not app.exception and not app.error
    made = sketch_query(bundle, np.round(path, 2), "city")
    own = bundle.xy.rows(row)  # the same path, driven at constant speed rather than the window's own
    assert np.linalg.norm(made.xy_agent[-1] - own[-1]) < 0.5
    gaps = np.linalg.norm(made.xy_agent[:, None] - own[None], axis=2).min(axis=1)
    assert gaps.max() < 1.0
    want = search_sketch(bundle, bundle.model_names[0], made, NeighborOptions(k=6, object_types=("vehicle",)))
    assert neighbor_ids(app) == bundle.strings("window_id", want.rows.tolist())
    app.segmented_control(key="sketch-frame").set_value("agent").run()  # another frame: the drawing goes
    assert not [d for d in app.dataframe if "window id" in d.value.columns]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_background_verification_yields_the_cpu_to_the_page(
    small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22, item 10: the full check of a newly opened bundle (8 s of CPU at a million windows)
    runs at the lowest priority, in its own thread only: the clicks it overlapped waited for it."""
    import os
    import threading

    monkeypatch.syspath_prepend(str(REPO_ROOT / "app"))
    import cache

    seen: list[tuple[int, int]] = []
    main_thread = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, main_thread)

    def verify_all(self: Bundle) -> None:
        own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        seen.append((own, os.getpriority(os.PRIO_PROCESS, main_thread)))

    monkeypatch.setattr(Bundle, "verify_all", verify_all)
    worker = threading.Thread(target=cache._verify, args=(Bundle(small_bundle), str(small_bundle), (0,)))
    worker.start()
    worker.join()
    assert seen == [(19, before)]  # the verifying thread at 19, the page's threads as they were


def test_explore_reads_the_manifest_once_per_version(
    small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22, item 10: a rerun of Explore no longer parses the manifest again (two megabytes of
    JSON at a million windows) to learn that nothing completes the bundle."""
    import trajemb.analysis.bundle as bundle_module

    at = start(small_bundle, monkeypatch)
    reads: list[Path] = []
    read = bundle_module.read_bundle_manifest

    def counted(root: Path) -> dict[str, object]:
        reads.append(root)
        return read(root)

    monkeypatch.setattr(bundle_module, "read_bundle_manifest", counted)
    at.button(key="random").click().run()
    at.button(key="random").click().run()
    assert not at.exception and reads == []


def test_url_numbers_outside_their_inputs_range_are_the_defaults(
    small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link with eps or speed beyond what their inputs allow (seen in Chromium: ``?collapse=1&eps=1e308``
    left one neighbour on Explore while the Duplicates page searched at eps 1e-06; ``?speed=1e308`` drew
    the sketch at the whole path's speed while the URL kept 1e308) takes the defaults, the same on
    every page, as an unreadable value does."""
    bundle = Bundle(small_bundle)
    at = start(small_bundle, monkeypatch, {"collapse": "1", "eps": "1e308", "speed": "1e308"})
    # eps's default: 0.01, ``trajemb mine duplicates --eps``'s
    assert neighbor_ids(at) == own_type_neighbor_ids(at, bundle, 6, collapse_eps=0.01)
    assert "eps" not in at.query_params and "speed" not in at.query_params
    at.switch_page("page_duplicates.py").run()
    assert not at.exception
    assert at.number_input(key="duplicate_eps").value == pytest.approx(0.01)
    at.switch_page("page_sketch.py").run()
    assert not at.exception
    assert at.number_input(key="sketch-speed").value == 0.0


def test_a_page_that_fails_unexpectedly_keeps_the_menu(
    small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug on a page (an exception no page expects, so Streamlit shows it) still leaves the links to every
    page in the sidebar: before, they were drawn after the page ran, and a bug took them away."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "app"))
    import ui

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in a page")

    monkeypatch.setattr(ui, "model_choice", broken)
    monkeypatch.setenv("TRAJEMB_BUNDLE", str(small_bundle))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert at.exception and "a bug in a page" in at.exception[0].value
    labels = [link.proto.label for link in at.sidebar.get("page_link")]
    assert len(labels) == 9 and labels[0] == "Explore" and labels[-1] == "Sketch a query", labels
