"""The explorer, headless with Streamlit's AppTest: every page renders, queries change neighbours."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO_ROOT

APP = str(REPO_ROOT / "app" / "streamlit_app.py")
PAGES = ("page_explore.py", "page_space.py", "page_compare.py", "page_evaluation.py", "page_query.py")


@pytest.fixture
def app(small_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TRAJEMB_BUNDLE", str(small_bundle))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    return at


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(app: AppTest, page: str) -> None:
    app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert app.title[0].value


def neighbor_ids(app: AppTest) -> list[str]:
    table = app.dataframe[-1].value  # the neighbour table is the last dataframe on the page
    return table["window id"].tolist()


def test_changing_the_query_changes_the_neighbours(app: AppTest) -> None:
    first = neighbor_ids(app)
    assert len(first) == 6  # default k
    app.session_state["query_row"] = (app.session_state["query_row"] + 500) % 1000
    app.run()
    second = neighbor_ids(app)
    assert second != first
    app.sidebar.slider[0].set_value(3).run()
    assert len(neighbor_ids(app)) == 3
    assert any("minADE@3" in m.label for m in app.metric)


def test_query_by_id_and_model_switch(app: AppTest, small_bundle: Path) -> None:
    from trajemb.bundle import Bundle

    wid = Bundle(small_bundle).table.meta["window_id"].iloc[42]
    app.text_input(key="query-id").set_value(wid)
    app.button[1].click().run()  # the form's submit button (the first button is "Random query")
    assert app.session_state["query_row"] == 42
    app.text_input(key="query-id").set_value("no/such")
    app.button[1].click().run()
    assert any("not in this bundle" in e.value for e in app.error)
    before = neighbor_ids(app)
    app.sidebar.selectbox[0].set_value("fft-d4").run()
    assert not app.exception and neighbor_ids(app) != before


def test_bad_upload_shows_an_error(app: AppTest) -> None:
    app.switch_page("page_query.py").run()
    assert not app.error  # the example points work
    assert len(neighbor_ids(app)) == 6
    app.text_area(key="points").set_value("x,y\n1,2\n3,banana").run()
    assert not app.exception
    assert any("Cannot use these points" in e.value and "must be numbers" in e.value for e in app.error)


def test_bad_bundle_path_is_reported(app: AppTest, tmp_path: Path) -> None:
    app.sidebar.text_input[0].set_value(str(tmp_path)).run()
    assert not app.exception
    assert any("Cannot open the bundle" in e.value and "not a trajemb bundle" in e.value for e in app.error)


@pytest.fixture(scope="module")
def real_bundle(mf_dir: Path, sensor_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real AV2 fixtures (motion forecasting + sensor logs) in a bundle with a shipped checkpoint."""
    from trajemb.bundle_build import BundleConfig, build_bundle
    from trajemb.evaluate import EvalConfig
    from trajemb.pipeline import shipped_checkpoints
    from trajemb.prepare import PrepareConfig, prepare_table

    root = tmp_path_factory.mktemp("real")
    config = PrepareConfig(
        av2_dirs=(str(mf_dir),), sensor_log_dirs=(str(sensor_dir),), workers=1, maps_dir=str(root / "maps")
    )
    prepare_table(config, root / "real.parquet", progress=False)
    ckpt = [c for c in shipped_checkpoints() if c.name == "compact-cosine-d16"]
    build_bundle(root / "real.parquet", ckpt, root / "bundle", root / "maps",
                 BundleConfig(evaluation=EvalConfig(num_queries=200), device="cpu"), progress=False)  # fmt: skip
    return root / "bundle"


def test_real_av2_bundle_in_the_app(real_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAJEMB_BUNDLE", str(real_bundle))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception and not at.error
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

    def fake_build(cache_dir: Path, progress: bool = True) -> Path:
        builds.append(cache_dir)
        logging.getLogger("trajemb.pipeline").info("building the default bundle (fake)")
        return small_bundle

    monkeypatch.delenv("TRAJEMB_BUNDLE", raising=False)
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    monkeypatch.setenv("TRAJEMB_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "build_default_bundle", fake_build)
    monkeypatch.setattr(cache, "_default_ready", {})

    def stage_lines(at: AppTest) -> list[str]:
        return [m.value for m in at.markdown if "building the default bundle (fake)" in m.value]

    first = AppTest.from_file(APP, default_timeout=120)
    first.run()
    assert not first.exception, [e.value for e in first.exception]
    assert len(stage_lines(first)) == 1
    second = AppTest.from_file(APP, default_timeout=120)
    second.run()
    assert not second.exception, [e.value for e in second.exception]
    assert stage_lines(second) == []
    assert second.dataframe  # the Explore page rendered on the default data
    assert builds == [tmp_path]
