"""A small browser-side companion of a 2-D layout plot (a Streamlit v2 component without a frame).

Plotly's zoom stays in the browser and its hover label holds only what the figure carries. The
companion finds the plot by its element key, reports the zoomed extent to the server (which redraws
the layout there, every window pickable once few enough are in view), and draws a hover card for the
point under the mouse: its id, label and a small drawing of its trajectory, from ``cards`` sent once
per view (not with every query). Text from data goes in as text nodes, never as HTML.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

JS = r"""
export default function(component) {
  const { data, setStateValue, setTriggerValue, parentElement } = component;
  const cards = data && data.cards ? JSON.parse(data.cards) : null;
  const index = new Map();
  if (cards) cards.rows.forEach((row, i) => index.set(row, i));
  const doc = parentElement.ownerDocument || document;
  let card = doc.getElementById('trajemb-card');
  if (!card) {
    card = doc.createElement('div');
    card.id = 'trajemb-card';
    card.setAttribute('data-testid', 'trajembHoverCard');
    card.style.cssText = 'position:fixed;z-index:1000;pointer-events:none;display:none;background:white;' +
      'border:1px solid #bbb;border-radius:4px;padding:4px 6px;font:11px sans-serif;color:#222;' +
      'box-shadow:0 1px 4px rgba(0,0,0,.2)';
    doc.body.appendChild(card);
  }
  const svgNS = 'http://www.w3.org/2000/svg';
  function show(ev) {
    const p = ev && ev.points && ev.points[0];
    if (!cards || !p) return;
    const row = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
    const i = index.get(row);
    if (i === undefined) { card.style.display = 'none'; return; }
    card.textContent = '';
    const title = doc.createElement('div');
    title.textContent = cards.ids[i];
    title.style.fontWeight = 'bold';
    const label = doc.createElement('div');
    label.textContent = cards.labels[i] + ' \u00b7 ' + cards.sides[i] + ' m box';
    const svg = doc.createElementNS(svgNS, 'svg');
    svg.setAttribute('width', '90');
    svg.setAttribute('height', '90');
    svg.setAttribute('viewBox', '-4 -4 107 107');
    const path = cards.paths[i];
    const pts = [];
    for (let k = 0; k + 1 < path.length; k += 2) pts.push(path[k] + ',' + (99 - path[k + 1]));
    const line = doc.createElementNS(svgNS, 'polyline');
    line.setAttribute('points', pts.join(' '));
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', cards.colors[i]);
    line.setAttribute('stroke-width', '5');
    line.setAttribute('stroke-linecap', 'round');
    const start = doc.createElementNS(svgNS, 'circle');
    start.setAttribute('cx', path[0]);
    start.setAttribute('cy', 99 - path[1]);
    start.setAttribute('r', '6');
    start.setAttribute('fill', '#000');
    svg.appendChild(line);
    svg.appendChild(start);
    card.appendChild(title);
    card.appendChild(label);
    card.appendChild(svg);
    const e = ev.event || {};
    card.style.left = ((e.clientX || 0) + 14) + 'px';
    card.style.top = ((e.clientY || 0) + 14) + 'px';
    card.style.display = 'block';
  }
  function hide() { card.style.display = 'none'; }
  let timer = null;
  function relayout() {
    const gd = hooked;
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (!gd || !gd._fullLayout || !gd._fullLayout.xaxis || !gd._fullLayout.yaxis) return;
      const x = gd._fullLayout.xaxis.range, y = gd._fullLayout.yaxis.range;
      const full = data && data.full;
      const whole = full && x[0] <= full[0] && x[1] >= full[1] && y[0] <= full[2] && y[1] >= full[3];
      setStateValue('view', whole ? null : [x[0], x[1], y[0], y[1]]);
    }, 250);
  }
  // The chosen drag tool (zoom, pan, box or lasso select), so that the next drawing of the plot (a new
  // chart, as when a selection is cleared) keeps it.
  function toolChosen(ev) {
    if (ev && typeof ev.dragmode === 'string') setStateValue('dragmode', ev.dragmode);
  }
  // Where Plotly's "Reset axes" and a double-click return: the whole layout, not the zoomed view this
  // figure was drawn at (Plotly keeps the range of the first drawing as its "initial" one).
  function home() {
    const fl = hooked && hooked._fullLayout;
    const full = data && data.full;
    if (!fl || !fl.xaxis || !fl.yaxis || !full) return;
    fl.xaxis._rangeInitial0 = full[0]; fl.xaxis._rangeInitial1 = full[1];
    fl.yaxis._rangeInitial0 = full[2]; fl.yaxis._rangeInitial1 = full[3];
    fl.xaxis._autorangeInitial = false; fl.yaxis._autorangeInitial = false;
  }
  // A click picks the point under it once Plotly's double-click delay has passed without a second
  // click: the first click of a double-click (which shows the whole layout) must not change the query.
  let pending = null, quietUntil = 0;
  function clicked(ev) {
    const p = ev && ev.points && ev.points[0];
    if (!data.pick || !p || p.customdata === undefined || performance.now() < quietUntil) return;
    const row = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
    const delay = (hooked && hooked._context && hooked._context.doubleClickDelay) || 500;
    clearTimeout(pending);
    pending = setTimeout(() => { pending = null; setTriggerValue('pick', row); }, delay);
  }
  function doubleClicked() {
    clearTimeout(pending);
    pending = null;
    quietUntil = performance.now() + 300;  // the second click of the pair comes right after this event
  }
  // The query (a black cross; an arrow at the edge pointing to it when it is outside the view) and its
  // neighbours (rings in a colour of their own), drawn over the plot area in an SVG
  // layer of the plot's own, placed through the axes at every draw and zoom (not part of the figure:
  // a figure that changed with every query made the browser draw the whole chart anew each time).
  const marks = (data && data.marks) || null;
  function drawMarks() {
    const gd = hooked;
    const fl = gd && gd._fullLayout;
    if (!fl || !fl.xaxis || !fl.yaxis || !fl._size) return;
    const box = gd.querySelector('.svg-container');
    if (!box) return;
    let layer = box.querySelector('svg.trajemb-marks');
    if (!layer) {
      layer = doc.createElementNS(svgNS, 'svg');
      layer.setAttribute('class', 'trajemb-marks');
      layer.setAttribute('data-testid', 'trajembLayoutMarks');
      layer.style.cssText = 'position:absolute;left:0;top:0;pointer-events:none;overflow:hidden';
      box.appendChild(layer);
    }
    const xa = fl.xaxis, ya = fl.yaxis, size = fl._size;
    layer.style.left = size.l + 'px';
    layer.style.top = size.t + 'px';
    layer.setAttribute('width', size.w);
    layer.setAttribute('height', size.h);
    layer.textContent = '';
    if (!marks) return;
    const at = p => [xa.l2p(p[0]), ya.l2p(p[1])];
    const inside = ([x, y]) => x >= -20 && y >= -20 && x <= size.w + 20 && y <= size.h + 20;
    (marks.neighbours || []).forEach(p => {
      const [x, y] = at(p);
      if (!inside([x, y])) return;
      const ring = doc.createElementNS(svgNS, 'circle');
      ring.setAttribute('cx', x); ring.setAttribute('cy', y); ring.setAttribute('r', '8');
      ring.setAttribute('fill', 'none'); ring.setAttribute('stroke', '#fff'); ring.setAttribute('stroke-width', '5');
      const line = ring.cloneNode();
      line.setAttribute('stroke', marks.ring); line.setAttribute('stroke-width', '3');
      line.setAttribute('data-mark', 'neighbour');
      layer.appendChild(ring);
      layer.appendChild(line);
    });
    if (marks.query) {
      const [x, y] = at(marks.query);
      if (x < 0 || y < 0 || x > size.w || y > size.h) {
        // Outside the view: an arrow on the edge, pointing towards it.
        const cx = Math.min(Math.max(x, 18), size.w - 18), cy = Math.min(Math.max(y, 18), size.h - 18);
        const a = Math.atan2(y - cy, x - cx), pt = (r, t) => (cx + r * Math.cos(a + t)) + ',' + (cy + r * Math.sin(a + t));
        const arrow = doc.createElementNS(svgNS, 'path');
        arrow.setAttribute('d', `M${pt(16, 0)}L${pt(13, 2.5)}L${pt(5, Math.PI)}L${pt(13, -2.5)}Z`);
        arrow.setAttribute('fill', '#000'); arrow.setAttribute('stroke', '#fff'); arrow.setAttribute('stroke-width', '1.5');
        arrow.setAttribute('data-mark', 'query-outside');
        const label = doc.createElementNS(svgNS, 'text');
        label.textContent = 'query';
        label.setAttribute('x', cx - 30 * Math.cos(a)); label.setAttribute('y', cy - 30 * Math.sin(a) + 4);
        const style = {'text-anchor': 'middle', 'font-size': '12', 'font-weight': 'bold', 'stroke': '#fff',
                       'stroke-width': '3', 'paint-order': 'stroke', 'data-mark': 'query-outside-label'};
        Object.entries(style).forEach(([k, v]) => label.setAttribute(k, v));
        layer.appendChild(arrow);
        layer.appendChild(label);
      } else {
        const cross = doc.createElementNS(svgNS, 'path');
        cross.setAttribute('d', `M${x - 5},${y - 5}L${x + 5},${y + 5}M${x - 5},${y + 5}L${x + 5},${y - 5}`);
        cross.setAttribute('stroke', '#000'); cross.setAttribute('stroke-width', '3');
        cross.setAttribute('data-mark', 'query');
        const halo = cross.cloneNode();
        halo.setAttribute('stroke', '#fff'); halo.setAttribute('stroke-width', '5'); halo.removeAttribute('data-mark');
        layer.appendChild(halo);
        layer.appendChild(cross);
      }
    }
  }
  let hooked = null;
  const events = [['plotly_relayout', relayout], ['plotly_hover', show], ['plotly_unhover', hide],
                  ['plotly_afterplot', drawMarks], ['plotly_relayouting', drawMarks], ['plotly_relayout', drawMarks],
                  ['plotly_afterplot', home], ['plotly_relayout', toolChosen], ['plotly_click', clicked],
                  ['plotly_doubleclick', doubleClicked]];
  function hook() {
    const host = doc.querySelector('.st-key-' + data.target);
    const gd = host && host.querySelector('.js-plotly-plot');
    if (!gd || !gd.on || gd === hooked) return;
    if (hooked && hooked.removeListener) events.forEach(([name, fn]) => hooked.removeListener(name, fn));
    events.forEach(([name, fn]) => gd.on(name, fn));
    hooked = gd;
    home();
    drawMarks();
  }
  hook();
  drawMarks();
  const poll = setInterval(hook, 400);
  return () => {
    clearInterval(poll);
    clearTimeout(timer);
    clearTimeout(pending);
    hide();
    if (hooked && hooked.removeListener) events.forEach(([name, fn]) => hooked.removeListener(name, fn));
  };
}
"""

_component: Any = None


def layout_companion(
    target_key: str,
    full_extent: tuple[float, float, float, float],
    cards_json: str | None,
    key: str,
    marks: dict[str, Any] | None = None,
    on_pick: Callable[[], None] | None = None,
) -> None:
    """Mount the companion of the plot keyed ``target_key``; its zoom lands in ``st.session_state[key]``
    (None: the whole layout), read by the page through ``view_of``, and so does the drag tool chosen in
    the plot's toolbar (``dragmode_of``). "Reset axes" and a double-click return to ``full_extent``.
    ``cards_json``: the hover cards as JSON (``cache.LayoutView.cards_json``: a string, made once per
    view, costs Streamlit nothing to send again; the dict was encoded twice per rerun). ``marks``:
    ``{"query": [x, y] or None, "neighbours": [[x, y], ...], "ring": colour}`` in the plot's
    coordinates, drawn over it (a black cross, or an arrow at the edge pointing to a query outside the
    view; rings) and kept in place through zooms. ``on_pick``: a click on a point makes it
    ``picked(key)`` and calls ``on_pick`` once the double-click delay has passed without a second click
    (the plot's own selection would have acted on the first click of a double-click)."""
    global _component
    if _component is None:
        _component = st.components.v2.component("trajemb_layout_companion", js=JS, isolate_styles=False)
    _component(
        key=key,
        data={
            "target": target_key,
            "full": list(full_extent),
            "cards": cards_json,
            "marks": marks,
            "pick": on_pick is not None,
        },
        default={"view": None, "dragmode": None},
        height=0,
        on_view_change=lambda: None,
        on_dragmode_change=lambda: None,
        on_pick_change=on_pick or (lambda: None),
    )


def _reported(key: str, name: str) -> Any:
    """The value ``name`` the companion keyed ``key`` last reported (None before it has)."""
    state = st.session_state.get(key)
    return state.get(name) if isinstance(state, dict) else getattr(state, name, None)


def dragmode_of(key: str) -> str | None:
    """The drag tool last chosen in the toolbar of the plot whose companion is keyed ``key``."""
    mode = _reported(key, "dragmode")
    return mode if mode in ("zoom", "pan", "select", "lasso") else None


def picked(key: str) -> int | None:
    """The row of the point last clicked (and not double-clicked) in the companion keyed ``key``'s plot."""
    row = _reported(key, "pick")
    if isinstance(row, bool) or not isinstance(row, int | float) or not float(row).is_integer():
        return None
    return int(row)


def view_of(key: str) -> tuple[float, float, float, float] | None:
    """The zoomed extent the companion keyed ``key`` last reported (None: the whole layout)."""
    view = _reported(key, "view")
    if isinstance(view, list | tuple) and len(view) == 4:
        try:
            return (float(view[0]), float(view[1]), float(view[2]), float(view[3]))
        except (TypeError, ValueError):
            return None
    return None


SKETCH_JS = r"""
export default function(component) {
  const { data, setStateValue, parentElement } = component;
  const doc = parentElement.ownerDocument || document;
  let hooked = null, reported = null;
  function lastPath(gd) {
    const shapes = (gd && gd.layout && gd.layout.shapes) || [];
    const last = shapes[shapes.length - 1];
    return last && typeof last.path === 'string' ? last.path : null;
  }
  function report() {
    const path = lastPath(hooked);
    if (!path || path === reported) return;  // a zoom or pan, or the path reported already
    reported = path;
    const nums = (path.match(/-?\d*\.?\d+(?:e[-+]?\d+)?/gi) || []).map(Number);
    const points = [];
    for (let k = 0; k + 1 < nums.length; k += 2) points.push([nums[k], nums[k + 1]]);
    if (points.length) setStateValue('path', points);
  }
  function hook() {
    const host = doc.querySelector('.st-key-' + data.target);
    const gd = host && host.querySelector('.js-plotly-plot');
    if (!gd || !gd.on || gd === hooked) return;
    if (hooked && hooked.removeListener) hooked.removeListener('plotly_relayout', report);
    gd.on('plotly_relayout', report);
    hooked = gd;
    reported = lastPath(gd);
  }
  hook();
  const poll = setInterval(hook, 300);
  return () => {
    clearInterval(poll);
    if (hooked && hooked.removeListener) hooked.removeListener('plotly_relayout', report);
  };
}
"""

_sketch_component: Any = None


def sketch_companion(target_key: str, key: str, on_path: Any) -> None:
    """Mount the companion of the drawing plot keyed ``target_key``: each path drawn with Plotly's
    "draw open path" tool lands, as its points in the plot's data coordinates, in
    ``st.session_state[key]`` (read by ``drawn_path``), and ``on_path`` runs."""
    global _sketch_component
    if _sketch_component is None:
        _sketch_component = st.components.v2.component(
            "trajemb_sketch_companion", js=SKETCH_JS, isolate_styles=False
        )
    _sketch_component(
        key=key, data={"target": target_key}, default={"path": None}, height=0, on_path_change=on_path
    )


def drawn_path(key: str) -> list[tuple[float, float]] | None:
    """The points of the path the companion keyed ``key`` last reported (None: none, or unreadable)."""
    state = st.session_state.get(key)
    path = state.get("path") if isinstance(state, dict) else getattr(state, "path", None)
    if not isinstance(path, list) or not path:
        return None
    try:
        return [(float(p[0]), float(p[1])) for p in path]
    except (TypeError, ValueError, IndexError):
        return None
