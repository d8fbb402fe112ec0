/* Live view: the driller's display.

   Time-based tracks in groups (one Plotly figure, one shared time axis, two value axes per
   track), current-value tiles with trend arrows, the rig-state banner and the stale state.
   History for the window comes from /api/series, then frames from the live stream are
   appended to a bounded buffer per channel (the window's length; samples closer together than
   window / MAX_POINTS are averaged into one point). The figure is redrawn with Plotly.react at most
   every REDRAW_MS, and a constant `uirevision` keeps the user's zoom and pan across redraws.

   Times on the axis are data (rig) time: with the simulator running faster than the wall
   clock they run ahead of it, so the window follows the newest data, not the clock. */
(function () {
  'use strict';

  const rigtel = window.rigtel;
  const GROUPS = [
    { title: 'Depth & ROP', left: ['DMEA', 'DBTM'], right: ['ROPA'], reversed: true },
    { title: 'Hookload & WOB', left: ['HKLA'], right: ['WOBA'] },
    { title: 'RPM & torque', left: ['RPMA'], right: ['TQA'] },
    { title: 'Standpipe pressure & flow', left: ['SPPA'], right: ['MFIA', 'MFOA'] },
    { title: 'Pit volume & gas', left: ['TVA'], right: ['GASA'] },
    { title: 'Mud temperatures', left: ['MTIA', 'MTOA'], right: [] },
  ];
  const TILES = ['DMEA', 'DBTM', 'ROPA', 'HKLA', 'WOBA', 'RPMA', 'TQA', 'SPPA', 'MFIA', 'MFOA', 'TVA', 'GASA'];
  // The predictor's derived rig-state channel: the first of these names that shows up.
  const RIG_STATE_CHANNELS = ['RIGSTATE', 'RIG_STATE', 'RSTATE'];
  // Codes the predictor is expected to publish (numbers: the bus and store carry numbers);
  // an unknown code is shown as its number.
  const RIG_STATE_CODES = {
    0: 'unknown', 1: 'drilling (rotary)', 2: 'drilling (slide)', 3: 'reaming', 4: 'circulating',
    5: 'in slips / connection', 6: 'tripping in', 7: 'tripping out', 8: 'rotating off bottom', 9: 'static',
  };
  const RIG_STATE_FRESH_MS = 30000;  // data time: older than this and the banner says not available
  const COLORS = ['#4cc9f0', '#ffd23f', '#f72585', '#3ddc84', '#ff9f1c', '#b8b8ff', '#ffffff', '#00f5d4'];
  const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", "Liberation Sans", Arial, sans-serif';
  const TREND_MS = 2 * 60000;   // trend arrows: the rate over the last two minutes of data
  const REDRAW_MS = [500, 1000];  // redraw every 0.5 s, slowing to 1 s when a draw is slow
  const MAX_POINTS = 1500;        // per channel: samples closer than window / MAX_POINTS are averaged
  const HISTORY_POINTS = 20000;   // asked of /api/series: raw samples when they fit, else roll-ups
  const PENDING_LIMIT = 50000;  // frames held while history loads
  const LEGEND_PX = 24;
  const BELOW_PX = 62;  // the note under the tracks and the page's bottom padding
  const MIN_HEIGHT = 560;

  const CHANNELS = [];
  for (const g of GROUPS) for (const c of g.left.concat(g.right)) if (!CHANNELS.includes(c)) CHANNELS.push(c);
  for (const c of TILES) if (!CHANNELS.includes(c)) CHANNELS.push(c);
  const STREAM_CHANNELS = CHANNELS.concat(RIG_STATE_CHANNELS);
  rigtel.streamOptions = { channels: STREAM_CHANNELS };

  const COLOR_OF = {};
  for (const g of GROUPS) g.left.concat(g.right).forEach(function (c, i) { if (!(c in COLOR_OF)) COLOR_OF[c] = i; });

  const state = {
    windowMs: 15 * 60000,
    following: true,
    uirev: 0,
    followRange: null,   // the live window, while following
    pausedRange: null,   // what the user zoomed or panned to, or where following stopped
    info: {},            // channel -> {unit, description, low, high} from /api/channels
    stored: null,        // Set of stored channel names, null until known
    buf: {},             // channel -> {t: [], v: [], n: []}
    latest: {},          // channel -> [ts, value]
    recent: {},          // channel -> {t: [], v: []}: every sample of the last TREND_MS, for the arrows
    ready: false,        // history for the window is in the buffer
    generation: 0,
    pending: [],
    dirty: true,
    revision: 0,
    rigState: null,      // [ts, value]
  };
  const stats = { draws: 0, drawMsTotal: 0, lastDrawMs: 0, firstDataMs: null, pointsDrawn: 0, historyMs: null };
  rigtel.live = { state: state, stats: stats, GROUPS: GROUPS };

  // -- buffers ----------------------------------------------------------------------------

  function bucketMs() { return state.windowMs / MAX_POINTS; }

  function bufferOf(name) {
    return state.buf[name] || (state.buf[name] = { t: [], v: [], n: [] });
  }

  function push(name, ts, v) {
    const b = bufferOf(name);
    const last = b.t.length - 1;
    if (last >= 0 && ts <= b.t[last]) return;  // already have it (history overlap, backfill)
    const w = bucketMs();
    if (last >= 0 && Math.floor(ts / w) === Math.floor(b.t[last] / w)) {
      b.v[last] = (b.v[last] * b.n[last] + v) / (b.n[last] + 1);
      b.n[last] += 1;
      b.t[last] = ts;
      return;
    }
    b.t.push(ts); b.v.push(v); b.n.push(1);
  }

  function pushRecent(name, ts, v) {
    const r = state.recent[name] || (state.recent[name] = { t: [], v: [] });
    if (r.t.length && ts <= r.t[r.t.length - 1]) return;
    r.t.push(ts); r.v.push(v);
    if (r.t[0] < ts - TREND_MS * 1.5) {
      let i = 0;
      while (r.t[i] < ts - TREND_MS) i += 1;
      r.t.splice(0, i); r.v.splice(0, i);
    }
  }

  /** Put raw history under the live samples already in the trend buffer. */
  function seedRecent(name, ts, values) {
    if (!ts.length) return;
    const last = ts[ts.length - 1];
    const r = { t: [], v: [] };
    for (let i = 0; i < ts.length; i += 1) {
      if (ts[i] >= last - TREND_MS && values[i] !== null) { r.t.push(ts[i]); r.v.push(values[i]); }
    }
    const live = state.recent[name];
    if (live) for (let i = 0; i < live.t.length; i += 1) if (live.t[i] > last) { r.t.push(live.t[i]); r.v.push(live.v[i]); }
    state.recent[name] = r;
  }

  function trim(newest) {
    const cutoff = newest - state.windowMs;
    for (const b of Object.values(state.buf)) {
      let i = 0;
      while (i < b.t.length && b.t[i] < cutoff) i += 1;
      if (i) { b.t.splice(0, i); b.v.splice(0, i); b.n.splice(0, i); }
      const over = b.t.length - MAX_POINTS * 1.25;
      if (over > 0) { b.t.splice(0, over); b.v.splice(0, over); b.n.splice(0, over); }
    }
  }

  function newestTs() {
    let newest = null;
    for (const b of Object.values(state.buf)) {
      if (b.t.length && (newest === null || b.t[b.t.length - 1] > newest)) newest = b.t[b.t.length - 1];
    }
    return newest;
  }

  function applyFrames(frames) {
    for (const [ts, values] of frames) {
      for (const [name, v] of Object.entries(values)) {
        if (RIG_STATE_CHANNELS.includes(name)) {
          if (!state.rigState || ts >= state.rigState[0]) state.rigState = [ts, v];
          continue;
        }
        if (!state.latest[name] || ts >= state.latest[name][0]) state.latest[name] = [ts, v];
        pushRecent(name, ts, v);
        if (state.ready) push(name, ts, v);
      }
    }
    if (!state.ready) {
      for (const f of frames) state.pending.push(f);
      if (state.pending.length > PENDING_LIMIT) state.pending.splice(0, state.pending.length - PENDING_LIMIT);
    }
    state.dirty = true;
  }

  let channelsAsked = null;
  function loadChannels() {
    if (!channelsAsked) {
      channelsAsked = fetchChannels().then(function (ok) { if (!ok) channelsAsked = null; return ok; });
    }
    return channelsAsked;
  }

  async function fetchChannels() {
    try {
      const list = await rigtel.api('/api/channels');
      state.info = {};
      for (const c of list) state.info[c.name] = c;
      state.stored = new Set(list.map(function (c) { return c.name; }));
      buildTiles();
      state.dirty = true;
      return true;
    } catch (e) {
      return false;
    }
  }

  /** Fill the buffers with the window's history, ending at the newest data we know of. */
  async function loadHistory() {
    const gen = ++state.generation;
    state.ready = false;
    state.buf = {};
    state.pending = [];
    state.dirty = true;
    if (!state.stored && !(await loadChannels())) {
      if (gen === state.generation) { state.ready = true; setTimeout(retryChannels, 5000); }
      return;
    }
    const names = CHANNELS.filter(function (c) { return state.stored.has(c); });
    const end = Math.max(rigtel.link.lastDataTs || 0, Date.now()) + 1;
    const t0 = performance.now();
    let data = null;
    if (names.length) {
      const q = new URLSearchParams({ channels: names.join(','), from: String(end - state.windowMs),
        to: String(end), max_points: String(HISTORY_POINTS) });
      try {
        data = await rigtel.api('/api/series?' + q);
      } catch (e) {
        console.warn('rigtel: history for the live window is not available: ' + e.message);
      }
    }
    if (gen !== state.generation) return;  // the window changed meanwhile
    stats.historyMs = performance.now() - t0;
    if (data) {
      for (const [name, s] of Object.entries(data.channels)) {
        const values = s.value || s.avg;
        for (let i = 0; i < s.ts.length; i += 1) if (values[i] !== null) push(name, s.ts[i], values[i]);
        if (s.value) seedRecent(name, s.ts, s.value);
      }
    }
    state.ready = true;
    const pending = state.pending;
    state.pending = [];
    applyFrames(pending);
    drawNow();
  }

  async function retryChannels() {
    if (await loadChannels()) loadHistory();
    else setTimeout(retryChannels, 5000);
  }

  // -- the figure ---------------------------------------------------------------------

  function unitOf(name) { return (state.info[name] && state.info[name].unit) || ''; }
  function label(name) { const u = unitOf(name); return u ? name + ' [' + u + ']' : name; }

  function axisIds(r) {
    const n = GROUPS.length;
    return { left: r === 0 ? 'y' : 'y' + (r + 1), right: 'y' + (n + r + 1) };
  }

  /** The figure's height in px: what is left of the window below the chart's top. */
  function figureHeight(gd) {
    const top = gd.getBoundingClientRect().top + window.scrollY;
    return Math.max(MIN_HEIGHT, Math.round(window.innerHeight - top - BELOW_PX));
  }

  function buildFigure(height) {
    const n = GROUPS.length;
    const gap = 0.01;
    const legendBand = LEGEND_PX / (height - 44);  // each track's legend sits above its plot
    const traces = [];
    const layout = {
      height: height,
      uirevision: 'live-' + state.windowMs + '-' + state.uirev,
      datarevision: state.revision,
      paper_bgcolor: '#10161d',
      plot_bgcolor: '#0a0e13',
      font: { family: FONT, color: '#eef3f8', size: 13 },
      margin: { l: 72, r: 72, t: 4, b: 40 },
      hovermode: 'x',
      dragmode: 'zoom',
      xaxis: { type: 'date', anchor: axisIds(n - 1).left, gridcolor: '#223040', linecolor: '#3a4a5a',
        tickfont: { size: 13 }, hoverformat: '%H:%M:%S', showspikes: true, spikemode: 'across',
        spikecolor: '#9fb0c0', spikethickness: 1 },
    };
    const range = state.following ? state.followRange : state.pausedRange;
    if (range) { layout.xaxis.range = range.slice(); layout.xaxis.autorange = false; }
    GROUPS.forEach(function (g, r) {
      const ids = axisIds(r);
      const top = 1 - r / n - (r ? gap : 0) - legendBand;
      const bottom = 1 - (r + 1) / n + (r < n - 1 ? gap : 0);
      const leftKey = 'yaxis' + ids.left.slice(1);
      const rightKey = 'yaxis' + ids.right.slice(1);
      const legendKey = r === 0 ? 'legend' : 'legend' + (r + 1);
      const leftUnit = unitOf(g.left[0]);
      layout[leftKey] = {
        domain: [bottom, top], anchor: 'x', gridcolor: '#1c2733', zerolinecolor: '#2a3744',
        title: { text: leftUnit, font: { size: 12, color: COLORS[COLOR_OF[g.left[0]]] }, standoff: 4 },
        tickfont: { color: COLORS[COLOR_OF[g.left[0]]] }, autorange: g.reversed ? 'reversed' : true,
        nticks: 5, fixedrange: false,
      };
      if (g.right.length) {
        const rightUnit = unitOf(g.right[0]);
        layout[rightKey] = {
          overlaying: ids.left, side: 'right', anchor: 'x', showgrid: false, zeroline: false, tickmode: 'auto',
          title: { text: rightUnit, font: { size: 12, color: COLORS[COLOR_OF[g.right[0]]] }, standoff: 4 },
          tickfont: { color: COLORS[COLOR_OF[g.right[0]]] }, nticks: 5,
        };
      }
      layout[legendKey] = {
        x: 0, y: top, xanchor: 'left', yanchor: 'bottom', orientation: 'h', bgcolor: 'rgba(0,0,0,0)',
        font: { size: 13 }, title: { text: g.title + '  ', font: { size: 13, color: '#9fb0c0' } },
        itemwidth: 30, tracegroupgap: 0,
      };
      const add = function (name, axis) {
        const b = state.buf[name] || { t: [], v: [] };
        traces.push({
          type: 'scatter', mode: 'lines', name: label(name), x: b.t.slice(), y: b.v.slice(),
          xaxis: 'x', yaxis: axis, legend: legendKey, meta: name,
          line: { color: COLORS[COLOR_OF[name]], width: 2 },
          hovertemplate: '%{y:.4~g} ' + unitOf(name) + '<extra>' + name + '</extra>',
        });
      };
      g.left.forEach(function (c) { add(c, ids.left); });
      g.right.forEach(function (c) { add(c, ids.right); });
    });
    return { data: traces, layout: layout };
  }

  function draw() {
    const gd = document.getElementById('live-tracks');
    const newest = newestTs();
    if (newest !== null) {
      trim(newest);
      if (state.following) state.followRange = [newest - state.windowMs, newest + state.windowMs * 0.01];
    }
    state.revision += 1;
    const fig = buildFigure(figureHeight(gd));
    const t0 = performance.now();
    Plotly.react(gd, fig.data, fig.layout, { responsive: true, displaylogo: false, scrollZoom: false,
      modeBarButtonsToRemove: ['select2d', 'lasso2d', 'toImage'] });
    const ms = performance.now() - t0;
    let points = 0;
    for (const t of fig.data) points += t.x.length;
    stats.draws += 1;
    stats.drawMsTotal += ms;
    stats.lastDrawMs = ms;
    stats.pointsDrawn = points;
    if (points && stats.firstDataMs === null) stats.firstDataMs = performance.now();
    if (!gd.dataset.bound) {
      gd.dataset.bound = '1';
      gd.on('plotly_relayout', onRelayout);
    }
  }

  function onRelayout(ev) {
    if (!ev) return;
    if (ev['xaxis.autorange']) { resume(); return; }
    if ('xaxis.range[0]' in ev || 'xaxis.range' in ev) {
      // keep showing what the user chose, whether by dragging or through Plotly.relayout
      pause(document.getElementById('live-tracks').layout.xaxis.range.slice());
    }
  }

  function pause(range) {
    state.following = false;
    state.pausedRange = range || state.followRange;
    renderFollow();
  }

  function resume() {
    state.following = true;
    state.uirev += 1;  // drop the user's zoom and pan: back to the live window
    state.dirty = true;
    renderFollow();
  }

  function renderFollow() {
    const b = document.getElementById('follow');
    b.setAttribute('aria-pressed', state.following ? 'true' : 'false');
    b.textContent = state.following ? 'Following live' : 'Paused · resume live';
  }

  // -- tiles, rig state, stale banner ----------------------------------------------------

  function buildTiles() {
    const box = document.getElementById('tiles');
    box.replaceChildren();
    for (const name of TILES) {
      const info = state.info[name] || {};
      const desc = (info.description || name).replace(/ \((average|measured)\)$/, '');
      box.append(rigtel.h('div', { className: 'tile c' + (COLOR_OF[name] || 0), id: 'tile-' + name, dataset: { channel: name } },
        rigtel.h('div', { className: 'tile-head' },
          rigtel.h('span', { className: 'tile-name', text: desc, title: info.description || name }),
          rigtel.h('span', { className: 'tile-mnemonic', text: name })),
        rigtel.h('div', { className: 'tile-value' },
          rigtel.h('span', { className: 'num', text: '—' }),
          rigtel.h('span', { className: 'tile-unit', text: info.unit || '' })),
        rigtel.h('div', { className: 'tile-trend', text: '' })));
    }
  }

  /** Change over TREND_MS by least squares, and whether it stands out of the noise. */
  function trend(name) {
    const b = state.recent[name];
    if (!b || b.t.length < 5) return null;
    const end = b.t[b.t.length - 1];
    let i = b.t.length - 1;
    while (i > 0 && b.t[i - 1] >= end - TREND_MS) i -= 1;
    const n = b.t.length - i;
    if (n < 5 || end - b.t[i] < TREND_MS / 4) return null;
    let st = 0, sv = 0;
    for (let k = i; k < b.t.length; k += 1) { st += b.t[k]; sv += b.v[k]; }
    const mt = st / n, mv = sv / n;
    let stt = 0, stv = 0;
    for (let k = i; k < b.t.length; k += 1) { stt += (b.t[k] - mt) ** 2; stv += (b.t[k] - mt) * (b.v[k] - mv); }
    if (!stt) return null;
    const slope = stv / stt;  // per ms
    let sse = 0;
    for (let k = i; k < b.t.length; k += 1) sse += (b.v[k] - mv - slope * (b.t[k] - mt)) ** 2;
    const slopeErr = Math.sqrt(sse / Math.max(1, n - 2) / stt);
    const info = state.info[name] || {};
    const span = (info.high !== null && info.low !== null && info.high !== undefined) ? info.high - info.low : 0;
    const perMin = slope * 60000;
    const change = Math.abs(slope * (end - b.t[i]));
    const scatter = Math.sqrt(sse / Math.max(1, n - 2));
    // an arrow when the trend is real (3 standard errors) and outgrows the scatter around it
    const significant = Math.abs(slope) > 3 * slopeErr && change > scatter && change > span * 1e-6;
    return { perMin: perMin, dir: !significant ? 'flat' : slope > 0 ? 'up' : 'down' };
  }

  function renderTiles() {
    for (const name of TILES) {
      const tile = document.getElementById('tile-' + name);
      if (!tile) continue;
      const last = state.latest[name];
      const info = state.info[name] || {};
      tile.querySelector('.num').textContent = last ? rigtel.fmtNumber(last[1]) : '—';
      const out = last && info.low !== null && info.low !== undefined && (last[1] < info.low || last[1] > info.high);
      tile.dataset.out = out ? 'yes' : 'no';
      const t = trend(name);
      const el = tile.querySelector('.tile-trend');
      if (t) {
        el.dataset.dir = t.dir;
        el.textContent = (t.perMin >= 0 ? '+' : '−') + rigtel.fmtNumber(Math.abs(t.perMin)) + ' ' + (info.unit || '') + '/min';
        el.title = 'rate over the last ' + TREND_MS / 60000 + ' minutes of data';
      } else {
        delete el.dataset.dir;
        el.textContent = '';
      }
    }
  }

  function renderRigState() {
    const el = document.getElementById('rig-state');
    const rs = state.rigState;
    const newest = rigtel.link.lastDataTs;
    if (rs && (newest === null || newest - rs[0] <= RIG_STATE_FRESH_MS)) {
      const v = rs[1];
      const text = typeof v === 'number' ? (RIG_STATE_CODES[v] || 'state code ' + v) : String(v);
      el.dataset.known = 'yes';
      el.textContent = 'Rig state: ' + text;
    } else {
      el.dataset.known = 'no';
      el.textContent = 'rig state: not available (predictor not running)';
    }
  }

  function renderStale(link) {
    const el = document.getElementById('stale-banner');
    if (link.state === 'stale') {
      el.dataset.state = 'stale';
      el.textContent = 'DATA STALE · last data ' + rigtel.fmtDuration(link.ageS) + ' ago';
      el.hidden = false;
    } else if (link.state === 'lost') {
      el.dataset.state = 'lost';
      el.textContent = 'LINK LOST · reconnecting to the appliance…';
      el.hidden = false;
    } else if (link.state === 'nodata') {
      el.dataset.state = 'stale';
      el.textContent = 'NO DATA YET · waiting for the rig feed';
      el.hidden = false;
    } else {
      el.hidden = true;
    }
  }

  // -- wiring -----------------------------------------------------------------------------

  let historyStarted = false;
  rigtel.on('snapshot', function (d) {
    for (const [name, pair] of Object.entries(d.values || {})) {
      if (RIG_STATE_CHANNELS.includes(name)) state.rigState = pair;
      else if (!state.latest[name] || pair[0] >= state.latest[name][0]) state.latest[name] = pair;
    }
    state.dirty = true;
    if (!historyStarted) { historyStarted = true; loadHistory(); }
  });
  rigtel.on('frames', function (d) { applyFrames(d.frames || []); });
  rigtel.on('link', renderStale);
  rigtel.on('alarms', function () { state.dirty = true; });  // the strip moves the tracks: fit them again

  document.addEventListener('DOMContentLoaded', function () {
    buildTiles();
    loadChannels().then(function (ok) { if (!ok) setTimeout(retryChannels, 5000); });
    for (const b of document.querySelectorAll('#window-picker button')) {
      b.addEventListener('click', function () {
        for (const o of document.querySelectorAll('#window-picker button')) o.setAttribute('aria-pressed', o === b ? 'true' : 'false');
        state.windowMs = Number(b.dataset.window);
        state.following = true;
        state.followRange = null;
        renderFollow();
        loadHistory();
      });
    }
    document.getElementById('follow').addEventListener('click', function () {
      if (state.following) pause(); else resume();
    });
    timer = setTimeout(tick, REDRAW_MS[0]);
  });

  let timer = null;
  let recentMs = 0;  // smoothed time a redraw takes
  function tick() {
    const t0 = performance.now();
    if (state.dirty) { state.dirty = false; draw(); renderTiles(); }
    renderRigState();
    const spent = performance.now() - t0;
    recentMs = 0.8 * recentMs + 0.2 * spent;
    const period = Math.min(REDRAW_MS[1], Math.max(REDRAW_MS[0], 3 * recentMs));
    timer = setTimeout(tick, Math.max(50, period - spent));
  }

  /** Draw at once rather than at the next tick (history has arrived). */
  function drawNow() {
    if (timer === null) return;  // not started yet: the first tick will draw
    clearTimeout(timer);
    tick();
  }
})();
