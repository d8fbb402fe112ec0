/* Live view: the driller's display.

   Time-based tracks in groups, current-value tiles with trend arrows, the rig-state banner
   and the stale state. History for the window comes from /api/series, then frames from the
   live stream (received by feed.js in a Web Worker, see common.js) are appended to a bounded
   buffer per channel: the window's length, samples closer together than window / MAX_POINTS
   averaged into one point, older points trimmed off.

   Drawing is kept short and off the receiving path. Each track group is its own small Plotly
   figure (no Plotly legend: the track's names are HTML above it), and one track is redrawn per
   animation frame, the one waiting longest, each at most once per pixel's worth of time on its
   axis, with a pause after each draw as long as the draw took:
   no task holds the page for long, so the tiles, the alarm strip and the next batch of frames
   never wait behind a full redraw. (A Plotly data update, extendTraces included, always
   replots the whole figure it touches; what can be made small is the figure.) The trace
   arrays are the buffers themselves, updated in place, and a per-figure `datarevision` tells
   Plotly.react they changed; a constant `uirevision` keeps the user's zoom and pan, and a zoom
   or pan in one track is applied to every track (they share one time axis).

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
  // The predictor's derived rig-state channel: a code, the index of its name in
  // appliance.predict.states.RIG_STATES, which the page carries (data-rig-states).
  const RIG_STATE_CHANNELS = ['RIGSTATE'];
  let rigStateNames = [];
  const RIG_STATE_FRESH_MS = 30000;  // data time: older than this and the banner says not available
  const COLORS = ['#4cc9f0', '#ffd23f', '#f72585', '#3ddc84', '#ff9f1c', '#b8b8ff', '#ffffff', '#00f5d4'];
  const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", "Liberation Sans", Arial, sans-serif';
  const TREND_MS = 2 * 60000;   // trend arrows: the rate over the last two minutes of data
  const TREND_EVERY_MS = 1000;  // the arrows are recomputed this often (numbers: every frame)
  const MAX_POINTS = 1500;        // per channel: samples closer than window / MAX_POINTS are averaged
  const HISTORY_POINTS = 20000;   // asked of /api/series: raw samples when they fit, else roll-ups
  const PENDING_LIMIT = 50000;  // frames held while history loads
  // A track is redrawn at most once per pixel's worth of time on its axis (15 min on 1,300 px:
  // 0.7 s), within these bounds: faster moves nothing on screen (the tiles carry the newest values).
  const TRACK_MS = [250, 1000];
  const DRAW_REST = 1.0;        // after a draw, no other for as long again: drawing takes at most half the page's time
  const CONFIG = { responsive: true, displaylogo: false, scrollZoom: false,
    modeBarButtonsToRemove: ['select2d', 'lasso2d', 'toImage', 'autoScale2d'] };
  const HEAD_PX = 24;   // a track's HTML header (its title and channel names)
  const AXIS_PX = 30;   // the time axis' labels under the last track
  const BELOW_PX = 62;  // the note under the tracks and the page's bottom padding
  const MIN_TRACK_PX = 70;

  const CHANNELS = [];
  for (const g of GROUPS) for (const c of g.left.concat(g.right)) if (!CHANNELS.includes(c)) CHANNELS.push(c);
  for (const c of TILES) if (!CHANNELS.includes(c)) CHANNELS.push(c);
  const STREAM_CHANNELS = CHANNELS.concat(RIG_STATE_CHANNELS);
  rigtel.streamOptions = { channels: STREAM_CHANNELS };

  const COLOR_OF = {};
  for (const g of GROUPS) g.left.concat(g.right).forEach(function (c, i) { if (!(c in COLOR_OF)) COLOR_OF[c] = i; });
  const TRACK_OF = {};  // channel -> index of its track
  GROUPS.forEach(function (g, i) { for (const c of g.left.concat(g.right)) TRACK_OF[c] = i; });

  const state = {
    windowMs: 15 * 60000,
    following: true,
    uirev: 0,
    followRange: null,   // the live window, while following
    followTarget: null,  // where it moves next (see followNewest)
    pausedRange: null,   // what the user zoomed or panned to, or where following stopped
    info: {},            // channel -> {unit, description, low, high} from /api/channels
    stored: null,        // Set of stored channel names, null until known
    buf: {},             // channel -> {t: [], v: [], n: []}; t and v are the traces' own arrays
    newest: null,        // newest timestamp in the buffers
    latest: {},          // channel -> [ts, value]
    recent: {},          // channel -> {t: [], v: []}: every sample of the last TREND_MS, for the arrows
    ready: false,        // history for the window is in the buffer
    generation: 0,
    pending: [],
    rigState: null,      // [ts, value]
    tilesDirty: true,
    trendsAt: -Infinity, // performance.now() of the last trend computation
    shownWait: [],       // (measuring only) timestamps of frames not yet shown in the tiles
  };
  const tracks = [];     // one per group: {group, index, gd, head, data, revision, dirty, drawnAt, busy, drawWait, shownRange}
  const stats = { draws: 0, drawMsTotal: 0, lastDrawMs: 0, maxDrawMs: 0, firstDataMs: null, pointsDrawn: 0,
    historyMs: null, trackDraws: GROUPS.map(function () { return 0; }) };
  rigtel.live = { state: state, stats: stats, GROUPS: GROUPS, tracks: tracks };

  // -- buffers ----------------------------------------------------------------------------

  function bucketMs() { return state.windowMs / MAX_POINTS; }

  function bufferOf(name) {
    return state.buf[name] || (state.buf[name] = { t: [], v: [], n: [] });
  }

  /** Append a sample; false when it is not newer than what the buffer has. */
  function push(name, ts, v) {
    const b = bufferOf(name);
    const last = b.t.length - 1;
    if (last >= 0 && ts <= b.t[last]) return false;  // already have it (history overlap, backfill)
    const w = bucketMs();
    if (last >= 0 && Math.floor(ts / w) === Math.floor(b.t[last] / w)) {
      b.v[last] = (b.v[last] * b.n[last] + v) / (b.n[last] + 1);
      b.n[last] += 1;
      b.t[last] = ts;
    } else {
      b.t.push(ts); b.v.push(v); b.n.push(1);
    }
    if (state.newest === null || ts > state.newest) state.newest = ts;
    return true;
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

  /** Drop what has left the window. In place (the arrays are the traces'), and only once a
      little has gathered, so a frame costs no array copy. */
  function trim() {
    if (state.newest === null) return;
    const cutoff = state.newest - state.windowMs;
    const slack = Math.max(8, MAX_POINTS / 50);
    for (const b of Object.values(state.buf)) {
      let i = 0;
      while (i < b.t.length && b.t[i] < cutoff) i += 1;
      const over = b.t.length - MAX_POINTS * 1.25;
      if (over > i) i = Math.ceil(over);
      if (i >= slack || (i && i === b.t.length)) { b.t.splice(0, i); b.v.splice(0, i); b.n.splice(0, i); }
    }
  }

  function applyFrames(frames, live) {
    const measuring = live && rigtel.perf.on;
    for (const [ts, values] of frames) {
      for (const [name, v] of Object.entries(values)) {
        if (RIG_STATE_CHANNELS.includes(name)) {
          if (!state.rigState || ts >= state.rigState[0]) state.rigState = [ts, v];
          continue;
        }
        if (!state.latest[name] || ts >= state.latest[name][0]) state.latest[name] = [ts, v];
        pushRecent(name, ts, v);
        if (state.ready && push(name, ts, v) && name in TRACK_OF) {
          const tr = tracks[TRACK_OF[name]];
          if (tr) {
            tr.dirty = true;
            if (measuring && tr.drawWait[tr.drawWait.length - 1] !== ts) tr.drawWait.push(ts);
          }
        }
      }
      if (measuring) state.shownWait.push(ts);
    }
    if (!state.ready) {
      for (const f of frames) state.pending.push(f);
      if (state.pending.length > PENDING_LIMIT) state.pending.splice(0, state.pending.length - PENDING_LIMIT);
    } else {
      trim();
      if (state.following) followNewest();
    }
    state.tilesDirty = true;
    schedule();
  }

  /** While following, the window ends at the newest data. The tracks are drawn one after
      the other, so the window moves in steps: the next step is taken once every track shows
      the current one, and they never disagree by more than one step. */
  function followNewest() {
    if (state.newest === null) return;
    const end = state.newest + state.windowMs * 0.01;
    if (state.followTarget && state.followTarget[1] === end) return;
    state.followTarget = [state.newest - state.windowMs, end];
    if (!state.followRange) commitFollow();
    else schedule();
  }

  function commitFollow() {
    state.followRange = state.followTarget;
    markAll();
  }

  function markAll() {
    for (const tr of tracks) tr.dirty = true;
    schedule();
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
      buildHeads();
      state.tilesDirty = true;
      markAll();  // units on the axes
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
    state.newest = null;
    state.pending = [];
    markAll();
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
    applyFrames(pending, false);
    followNewest();
    markAll();
  }

  async function retryChannels() {
    if (await loadChannels()) loadHistory();
    else setTimeout(retryChannels, 5000);
  }

  // -- the tracks -------------------------------------------------------------------------

  function unitOf(name) { return (state.info[name] && state.info[name].unit) || ''; }
  function label(name) { const u = unitOf(name); return u ? name + ' [' + u + ']' : name; }

  function buildTracks() {
    const box = document.getElementById('live-tracks');
    box.replaceChildren();
    GROUPS.forEach(function (g, i) {
      const head = rigtel.h('div', { className: 'track-head' });
      const gd = rigtel.h('div', { className: 'track-plot', id: 'track-' + i, dataset: { track: String(i) } });
      box.append(rigtel.h('div', { className: 'track', dataset: { track: String(i) } }, head, gd));
      const data = [];
      const add = function (name, axis) {
        data.push({
          type: 'scatter', mode: 'lines', name: name, x: [], y: [], xaxis: 'x', yaxis: axis, meta: name,
          line: { color: COLORS[COLOR_OF[name]], width: 2 }, hovertemplate: '',
        });
      };
      g.left.forEach(function (c) { add(c, 'y'); });
      g.right.forEach(function (c) { add(c, 'y2'); });
      tracks.push({ group: g, index: i, gd: gd, head: head, data: data, revision: 0, dirty: true,
        drawnAt: -Infinity, busy: false, drawWait: [], bound: false, shownRange: null });
    });
    buildHeads();
  }

  /** Each track's title and its channels' names and units, coloured like their lines. */
  function buildHeads() {
    for (const tr of tracks) {
      const chips = tr.group.left.concat(tr.group.right).map(function (name) {
        return rigtel.h('span', { className: 'track-channel c' + COLOR_OF[name], title: (state.info[name] || {}).description || name },
          rigtel.h('span', { className: 'swatch', 'aria-hidden': 'true' }), label(name));
      });
      tr.head.replaceChildren(rigtel.h('span', { className: 'track-title', text: tr.group.title }), ...chips);
    }
  }

  /** Each track's plot height in px: the window's height below the tracks' top, shared. */
  function plotHeights() {
    const box = document.getElementById('live-tracks');
    const top = box.getBoundingClientRect().top + window.scrollY;
    const n = GROUPS.length;
    const free = window.innerHeight - top - BELOW_PX - n * HEAD_PX - AXIS_PX;
    const each = Math.max(MIN_TRACK_PX, Math.floor(free / n));
    return { each: each, last: each + AXIS_PX, plotPx: Math.max(100, box.clientWidth - 144) };
  }

  let heights = null;

  /** How often a track may be redrawn, in ms: a pixel's worth of the window, within TRACK_MS. */
  function trackMs() {
    const px = heights ? heights.plotPx : 1000;
    return Math.min(TRACK_MS[1], Math.max(TRACK_MS[0], state.windowMs / px));
  }

  function layoutOf(tr) {
    const g = tr.group;
    const last = tr.index === GROUPS.length - 1;
    const leftColor = COLORS[COLOR_OF[g.left[0]]];
    const layout = {
      height: last ? heights.last : heights.each,
      uirevision: 'live-' + state.windowMs + '-' + state.uirev,
      datarevision: tr.revision,
      showlegend: false,
      paper_bgcolor: '#10161d',
      plot_bgcolor: '#0a0e13',
      font: { family: FONT, color: '#eef3f8', size: 13 },
      margin: { l: 72, r: 72, t: 4, b: last ? AXIS_PX + 4 : 4 },
      hovermode: 'x',
      dragmode: 'zoom',
      xaxis: { type: 'date', gridcolor: '#223040', linecolor: '#3a4a5a', showticklabels: last,
        tickfont: { size: 13 }, hoverformat: '%H:%M:%S', showspikes: true, spikemode: 'across',
        spikecolor: '#9fb0c0', spikethickness: 1, ticklabeloverflow: 'allow', tickangle: 0 },
      yaxis: {
        gridcolor: '#1c2733', zerolinecolor: '#2a3744', nticks: 4, ticklabeloverflow: 'allow', tickangle: 0,
        tickfont: { color: leftColor }, autorange: g.reversed ? 'reversed' : true,
      },
    };
    const range = state.following ? state.followRange : state.pausedRange;
    if (range) { layout.xaxis.range = range.slice(); layout.xaxis.autorange = false; }
    if (g.right.length) {
      const rightColor = COLORS[COLOR_OF[g.right[0]]];
      layout.yaxis2 = {
        overlaying: 'y', side: 'right', showgrid: false, zeroline: false, nticks: 4, ticklabeloverflow: 'allow',
        tickangle: 0, tickfont: { color: rightColor },
      };
    }
    return layout;
  }

  /** Redraw one track; returns the main-thread ms it took. */
  function drawTrack(tr) {
    tr.dirty = false;
    tr.busy = true;
    tr.revision += 1;
    let points = 0;
    for (const t of tr.data) {
      const b = bufferOf(t.meta);
      t.x = b.t;
      t.y = b.v;
      t.name = label(t.meta);
      t.hovertemplate = '%{y:.4~g} ' + unitOf(t.meta) + '<extra>' + t.meta + '</extra>';
      points += b.t.length;
    }
    tr.shownRange = state.following ? state.followRange : state.pausedRange;
    const waiting = tr.drawWait;
    tr.drawWait = [];
    const t0 = performance.now();
    const done = Plotly.react(tr.gd, tr.data, layoutOf(tr), CONFIG);
    const ms = performance.now() - t0;
    done.then(function () {
      // what Plotly finished after the call returned counts too, for the rest and the figures
      const full = performance.now() - t0;
      nextDrawAt = Math.max(nextDrawAt, performance.now() + DRAW_REST * full);
      stats.drawMsTotal += full - ms;
      stats.maxDrawMs = Math.max(stats.maxDrawMs, full);
      if (rigtel.perf.on) rigtel.perf.add('drawMs', full);
      tr.busy = false;
      if (waiting.length && rigtel.perf.on) {
        const now = Date.now();
        for (const ts of waiting) rigtel.perf.add('drawn', now - ts);
      }
    }, function (e) {
      tr.busy = false;
      console.error('rigtel: drawing track ' + tr.group.title + ' failed', e);
    });
    tr.drawnAt = performance.now();
    stats.draws += 1;
    stats.trackDraws[tr.index] += 1;
    stats.drawMsTotal += ms;
    stats.lastDrawMs = ms;
    stats.pointsDrawn = points;
    if (points && stats.firstDataMs === null) stats.firstDataMs = performance.now();
    if (!tr.bound) {
      tr.bound = true;
      tr.gd.on('plotly_relayout', function (ev) { onRelayout(tr, ev); });
    }
    return ms;
  }

  function onRelayout(tr, ev) {
    if (!ev) return;
    if (ev['xaxis.autorange']) { resume(); return; }
    if ('xaxis.range[0]' in ev || 'xaxis.range' in ev) {
      // keep showing what the user chose, whether by dragging or through Plotly.relayout,
      // on every track: they share the time axis
      pause(tr.gd.layout.xaxis.range.slice());
      for (const other of tracks) if (other !== tr) other.dirty = true;
      nextDrawAt = 0;  // follow the user's hand at once
      schedule();
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
    state.followRange = null;
    state.followTarget = null;
    followNewest();
    markAll();
    renderFollow();
  }

  function renderFollow() {
    const b = document.getElementById('follow');
    b.setAttribute('aria-pressed', state.following ? 'true' : 'false');
    b.textContent = state.following ? 'Following live' : 'Paused · resume live';
  }

  // -- the frame loop ---------------------------------------------------------------------

  let frameAsked = false;
  let timer = null;
  let nextDrawAt = 0;   // performance.now() before which no track is drawn (the rest after a draw)

  /** Ask for an animation frame if there is something to show. */
  function schedule() {
    if (frameAsked) return;
    frameAsked = true;
    requestAnimationFrame(onFrame);
  }

  /** The track that has waited longest for its redraw, if one may be drawn now. */
  function nextTrack(now) {
    let best = null;
    for (const tr of tracks) {
      if (!tr.dirty || tr.busy || now - tr.drawnAt < trackMs()) continue;
      if (best === null || tr.drawnAt < best.drawnAt) best = tr;
    }
    return best;
  }

  function onFrame() {
    frameAsked = false;
    const now = performance.now();
    if (state.tilesDirty) renderTiles(now);
    if (heights === null) heights = plotHeights();
    if (state.following && state.followTarget !== state.followRange
        && tracks.every(function (t) { return t.shownRange === state.followRange; })) commitFollow();
    if (now >= nextDrawAt) {
      const tr = nextTrack(now);
      if (tr) nextDrawAt = performance.now() + DRAW_REST * drawTrack(tr);
    }
    if (tracks.some(function (t) { return t.dirty; })) {
      // come back when the rest after the last draw is over, or when a track may be drawn again
      const soonest = Math.max(nextDrawAt, Math.min.apply(null, tracks.filter(function (t) { return t.dirty; })
        .map(function (t) { return t.drawnAt + trackMs(); })));
      const wait = soonest - performance.now();
      if (wait > 8) {
        if (timer === null) timer = setTimeout(function () { timer = null; schedule(); }, wait);
      } else {
        schedule();
      }
    }
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

  /** The numbers, every frame they change; the trend arrows, once every TREND_EVERY_MS. */
  function renderTiles(now) {
    state.tilesDirty = false;
    const trends = now - state.trendsAt >= TREND_EVERY_MS;
    if (trends) state.trendsAt = now;
    for (const name of TILES) {
      const tile = document.getElementById('tile-' + name);
      if (!tile) continue;
      const last = state.latest[name];
      const info = state.info[name] || {};
      const text = last ? rigtel.fmtNumber(last[1]) : '—';
      const num = tile.querySelector('.num');
      if (num.textContent !== text) num.textContent = text;
      const out = last && info.low !== null && info.low !== undefined && (last[1] < info.low || last[1] > info.high);
      tile.dataset.out = out ? 'yes' : 'no';
      if (!trends) continue;
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
    if (state.shownWait.length) {
      const wall = Date.now();
      if (rigtel.perf.on) for (const ts of state.shownWait) rigtel.perf.add('shown', wall - ts);
      state.shownWait = [];
    }
    renderRigState();
  }

  function renderRigState() {
    const el = document.getElementById('rig-state');
    const rs = state.rigState;
    const newest = rigtel.link.lastDataTs;
    if (rs && (newest === null || newest - rs[0] <= RIG_STATE_FRESH_MS)) {
      const v = rs[1];
      const name = typeof v === 'number' && Number.isInteger(v) ? rigStateNames[v] : undefined;
      const text = name !== undefined ? name.replace(/_/g, ' ') : 'state code ' + v;
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
    state.tilesDirty = true;
    schedule();
    if (!historyStarted) { historyStarted = true; loadHistory(); }
  });
  rigtel.on('frames', function (d) {
    if (d.dropped && historyStarted) loadHistory();  // the feed had to let frames go: refill from storage
    for (const c of d.chunks) applyFrames(c.frames, !c.backfill);
  });
  rigtel.on('link', function (link) {
    renderStale(link);
    if (link.changed) { state.tilesDirty = true; schedule(); }
  });
  rigtel.on('alarms', function () {  // the strip moves the tracks: fit them again
    heights = null;
    markAll();
  });

  document.addEventListener('DOMContentLoaded', function () {
    try {
      rigStateNames = JSON.parse(document.getElementById('live').dataset.rigStates || '[]');
    } catch (e) {
      console.error('rigtel: the rig-state names did not come with the page', e);
    }
    buildTiles();
    buildTracks();
    loadChannels().then(function (ok) { if (!ok) setTimeout(retryChannels, 5000); });
    for (const b of document.querySelectorAll('#window-picker button')) {
      b.addEventListener('click', function () {
        for (const o of document.querySelectorAll('#window-picker button')) o.setAttribute('aria-pressed', o === b ? 'true' : 'false');
        state.windowMs = Number(b.dataset.window);
        state.following = true;
        state.followRange = null;
        state.followTarget = null;
        renderFollow();
        loadHistory();
      });
    }
    document.getElementById('follow').addEventListener('click', function () {
      if (state.following) pause(); else resume();
    });
    window.addEventListener('resize', function () { heights = null; markAll(); });
    // the rig-state banner ages even when no frame comes
    setInterval(function () { state.tilesDirty = true; schedule(); }, 1000);
    schedule();
  });
})();
