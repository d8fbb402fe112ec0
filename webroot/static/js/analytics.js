/* Analytics view: history of any channel set over any range, the drilling curve (depth
   versus time), a correlation scatter coloured by a third channel, a correlation matrix
   computed here from the /api/series answer, a CSV export link for the same selection, and
   performance KPIs from /api/kpis (estimated from raw channels until the predictor runs).

   /api/series chooses the resolution (raw samples, or 1-minute / 1-hour roll-ups) from the
   point budget; rolled-up data is drawn as a min-max band with the average as a line.
   Times are UTC epoch ms; the range inputs are read and written as UTC. */
(function () {
  'use strict';

  const rigtel = window.rigtel;
  rigtel.streamOptions = { rateHz: 1 };  // only for the indicator and the alarm strip

  const DEFAULT_CHANNELS = ['HKLA', 'WOBA', 'ROPA', 'SPPA'];
  const SCATTER_DEFAULT = ['WOBA', 'ROPA', 'DMEA'];
  const MAX_ROWS = 12;
  const COLORS = ['#4cc9f0', '#ffd23f', '#f72585', '#3ddc84', '#ff9f1c', '#b8b8ff', '#ffffff', '#00f5d4'];
  const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", "Liberation Sans", Arial, sans-serif';
  const CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ['select2d', 'lasso2d'] };
  const RESOLUTION_TEXT = {
    raw: 'raw samples',
    '1m': '1-minute roll-ups: min–max band, average line',
    '1h': '1-hour roll-ups: min–max band, average line',
  };

  const state = { info: {}, order: [], last: null };
  rigtel.analytics = state;

  function $(id) { return document.getElementById(id); }

  function baseLayout(extra) {
    return Object.assign({
      paper_bgcolor: '#10161d', plot_bgcolor: '#0a0e13',
      font: { family: FONT, color: '#eef3f8', size: 13 },
      margin: { l: 80, r: 30, t: 10, b: 45 },
      hovermode: 'closest',
    }, extra || {});
  }
  function axis(extra) {
    return Object.assign({ gridcolor: '#1c2733', linecolor: '#3a4a5a', zerolinecolor: '#2a3744' }, extra || {});
  }
  function label(name) {
    const u = state.info[name] && state.info[name].unit;
    return u ? name + ' [' + u + ']' : name;
  }
  function status(text, isError) {
    const el = $('query-status');
    el.textContent = text;
    el.classList.toggle('error', !!isError);
  }
  function withAlpha(hex, a) {
    const n = parseInt(hex.slice(1), 16);
    return 'rgba(' + (n >> 16) + ',' + ((n >> 8) & 255) + ',' + (n & 255) + ',' + a + ')';
  }

  /** The end of "last N hours": now, or the newest data when it is ahead of the clock
      (a simulator running faster than real time stamps frames in rig time). */
  async function dataEnd() {
    let newest = rigtel.link.lastDataTs || 0;
    try {
      const latest = await rigtel.api('/api/latest');
      for (const v of Object.values(latest.values)) newest = Math.max(newest, v.ts);
    } catch (e) { /* the clock will do */ }
    return Math.max(Date.now(), newest + 1);
  }

  // -- the form ------------------------------------------------------------------------

  function selected() {
    return Array.from(document.querySelectorAll('#channel-checks input:checked')).map(function (i) { return i.value; });
  }

  function buildChecks(chosen) {
    const box = $('channel-checks');
    box.replaceChildren();
    for (const name of state.order) {
      const info = state.info[name];
      box.append(rigtel.h('label', { title: info.description || name },
        rigtel.h('input', { type: 'checkbox', value: name, id: 'ch-' + name, checked: chosen.includes(name) ? '' : null }),
        rigtel.h('span', { text: name }),
        rigtel.h('span', { className: 'unit', text: info.unit || '' })));
    }
    for (const id of ['scatter-x', 'scatter-y', 'scatter-c']) {
      const sel = $(id);
      sel.replaceChildren();
      if (id === 'scatter-c') sel.append(rigtel.h('option', { value: '', text: 'none' }));
      for (const name of state.order) sel.append(rigtel.h('option', { value: name, text: label(name) }));
    }
    const pick = function (id, want) { if (state.info[want]) $(id).value = want; };
    pick('scatter-x', SCATTER_DEFAULT[0]);
    pick('scatter-y', SCATTER_DEFAULT[1]);
    pick('scatter-c', SCATTER_DEFAULT[2]);
  }

  async function applyPreset() {
    const preset = $('range-preset').value;
    if (preset === 'custom') return;
    const end = await dataEnd();
    $('range-to').value = rigtel.toInput(end);
    $('range-from').value = rigtel.toInput(end - Number(preset));
  }

  function range() {
    const from = rigtel.fromInput($('range-from').value);
    const to = rigtel.fromInput($('range-to').value);
    if (!isFinite(from) || !isFinite(to)) throw new Error('enter both ends of the time range');
    if (to <= from) throw new Error('the range ends before it starts: check From and To');
    return { from: from, to: to };
  }

  function updateExport(names, r) {
    const a = $('export');
    if (!names.length || !r) { a.removeAttribute('href'); return; }
    const q = new URLSearchParams({ channels: names.join(','), from: String(r.from), to: String(r.to),
                                    format: $('export-format').value });
    a.href = '/api/export?' + q;
    state.exportArgs = [names, r];
  }

  // -- loading ---------------------------------------------------------------------------

  function seriesUrl(names, r, extra) {
    const q = new URLSearchParams(Object.assign({ channels: names.join(','), from: String(r.from), to: String(r.to) }, extra || {}));
    return '/api/series?' + q;
  }

  async function load() {
    let r;
    const names = selected();
    try {
      r = range();
      if (!names.length) throw new Error('tick at least one channel');
    } catch (e) {
      status(e.message, true);
      return;
    }
    updateExport(names, r);
    const q = new URLSearchParams({ channels: names.join(','), from: String(r.from), to: String(r.to) });
    if ($('resolution').value) q.set('resolution', $('resolution').value);
    history.replaceState(null, '', '?' + q);
    status('loading ' + names.length + ' channel(s)…');
    const t0 = performance.now();
    const extra = $('resolution').value ? { resolution: $('resolution').value } : {};
    try {
      const data = await rigtel.api(seriesUrl(names, r, extra));
      state.last = { names: names, range: r, data: data };
      drawHistory(names, data, r);
      drawMatrix(names, data);
      let points = 0;
      for (const s of Object.values(data.channels)) points += s.ts.length;
      status(points + ' points from ' + rigtel.fmtTime(r.from) + ' to ' + rigtel.fmtTime(r.to) + ' UTC (' +
        RESOLUTION_TEXT[data.resolution] + ') in ' + Math.round(performance.now() - t0) + ' ms');
      $('history-chart').dataset.loaded = String(Date.now());
    } catch (e) {
      status('history not loaded: ' + e.message, true);
      return;
    }
    loadDepth(r);
    loadScatter(r);
    loadKpis(r);
  }

  function values(series) { return series.value || series.avg; }

  function drawHistory(names, data, r) {
    const rows = Math.min(names.length, MAX_ROWS);
    const shown = names.slice(0, rows);
    const gap = rows > 1 ? 0.04 / rows : 0;
    const rolled = data.resolution !== 'raw';
    const layout = baseLayout({ height: Math.max(320, 150 * rows + 60), showlegend: false, hovermode: 'x',
      // the range asked for, not just where data is: gaps and a late start stay visible
      xaxis: axis({ type: 'date', anchor: rows > 1 ? 'y' + rows : 'y', hoverformat: '%Y-%m-%d %H:%M:%S',
        range: [r.from, r.to] }),
      uirevision: shown.join(',') + '@' + r.from + '-' + r.to });
    const traces = [];
    shown.forEach(function (name, i) {
      const yid = i === 0 ? 'y' : 'y' + (i + 1);
      const top = 1 - i / rows - (i ? gap : 0);
      const bottom = 1 - (i + 1) / rows + (i < rows - 1 ? gap : 0);
      layout['yaxis' + (i === 0 ? '' : i + 1)] = axis({ domain: [bottom, top], anchor: 'x', nticks: 5,
        title: { text: label(name), font: { size: 12, color: COLORS[i % COLORS.length] } } });
      const s = data.channels[name];
      const color = COLORS[i % COLORS.length];
      if (rolled) {
        traces.push({ type: 'scatter', mode: 'lines', x: s.ts, y: s.max, yaxis: yid, name: name + ' max',
          line: { width: 0, color: color }, hoverinfo: 'skip', connectgaps: false });
        traces.push({ type: 'scatter', mode: 'lines', x: s.ts, y: s.min, yaxis: yid, name: name + ' min',
          line: { width: 0, color: color }, fill: 'tonexty', fillcolor: withAlpha(color, 0.28), hoverinfo: 'skip', connectgaps: false });
      }
      traces.push({ type: 'scatter', mode: 'lines', x: s.ts, y: values(s), yaxis: yid, name: name,
        line: { width: 1.6, color: color }, meta: name,
        hovertemplate: '%{y:.4~g} ' + ((state.info[name] || {}).unit || '') + '<extra>' + name + (rolled ? ' avg' : '') + '</extra>' });
    });
    $('history-resolution').textContent = '· ' + RESOLUTION_TEXT[data.resolution] +
      (names.length > rows ? ' · first ' + rows + ' of ' + names.length + ' channels drawn' : '');
    Plotly.react($('history-chart'), traces, layout, CONFIG);
  }

  async function loadDepth(r) {
    const names = ['DMEA', 'DBTM'].filter(function (n) { return state.info[n]; });
    const el = $('depth-chart');
    if (!names.length) { Plotly.purge(el); el.textContent = 'No depth channels (DMEA, DBTM) are stored yet.'; return; }
    try {
      const data = await rigtel.api(seriesUrl(names, r));
      const traces = names.map(function (n, i) {
        const s = data.channels[n];
        return { type: 'scatter', mode: 'lines', name: label(n), x: s.ts, y: values(s),
          line: { width: 2, color: i ? '#ffd23f' : '#4cc9f0' } };
      });
      Plotly.react(el, traces, baseLayout({
        xaxis: axis({ type: 'date', title: { text: 'time (UTC)' }, range: [r.from, r.to] }),
        yaxis: axis({ autorange: 'reversed', title: { text: 'depth [' + (state.info[names[0]].unit || 'ft') + ']' } }),
        legend: { x: 0.99, xanchor: 'right', y: 0.98, yanchor: 'top', bgcolor: 'rgba(10,14,19,0.8)' },
        hovermode: 'x',
      }), CONFIG);
    } catch (e) {
      el.textContent = 'Drilling curve not loaded: ' + e.message;
    }
  }

  /** Values of several channels at shared timestamps: {ts: [...], cols: {name: [...]}}. */
  function align(data, names) {
    const maps = {};
    const all = new Set();
    for (const n of names) {
      const s = data.channels[n];
      const v = values(s);
      const m = new Map();
      for (let i = 0; i < s.ts.length; i += 1) if (v[i] !== null) { m.set(s.ts[i], v[i]); all.add(s.ts[i]); }
      maps[n] = m;
    }
    const ts = Array.from(all).sort(function (a, b) { return a - b; });
    const cols = {};
    for (const n of names) cols[n] = ts.map(function (t) { const v = maps[n].get(t); return v === undefined ? null : v; });
    return { ts: ts, cols: cols };
  }

  async function loadScatter(r) {
    const x = $('scatter-x').value, y = $('scatter-y').value, c = $('scatter-c').value;
    const el = $('scatter-chart');
    r = r || (state.last && state.last.range);
    if (!x || !y || !r) return;
    const names = Array.from(new Set([x, y].concat(c ? [c] : [])));
    try {
      const data = await rigtel.api(seriesUrl(names, r, { max_points: '5000' }));
      const a = align(data, names);
      const px = [], py = [], pc = [], pt = [];
      for (let i = 0; i < a.ts.length; i += 1) {
        if (a.cols[x][i] === null || a.cols[y][i] === null) continue;
        px.push(a.cols[x][i]); py.push(a.cols[y][i]); pt.push(a.ts[i]);
        if (c) pc.push(a.cols[c][i]);
      }
      const marker = { size: 5, opacity: 0.75, color: '#4cc9f0' };
      const key = $('scatter-key');
      key.hidden = true;
      if (c) {
        let lo = Infinity, hi = -Infinity;
        for (const v of pc) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
        if (lo <= hi) {
          // the key is drawn in HTML: plotly.js's colour bar sets style attributes, which the CSP refuses
          Object.assign(marker, { color: pc, colorscale: 'Viridis', cmin: lo, cmax: hi, showscale: false });
          $('scatter-key-name').textContent = 'colour: ' + label(c);
          $('scatter-key-min').textContent = rigtel.fmtNumber(lo);
          $('scatter-key-max').textContent = rigtel.fmtNumber(hi);
          key.hidden = false;
        }
      }
      Plotly.react(el, [{ type: 'scatter', mode: 'markers', x: px, y: py, customdata: pt, marker: marker,
        hovertemplate: label(x) + ' %{x:.4~g}<br>' + label(y) + ' %{y:.4~g}' + (c ? '<br>' + label(c) + ' %{marker.color:.5~g}' : '') + '<extra></extra>' }],
      baseLayout({ xaxis: axis({ title: { text: label(x) } }), yaxis: axis({ title: { text: label(y) } }),
        margin: { l: 80, r: 20, t: 10, b: 50 } }), CONFIG);
      el.dataset.points = String(px.length);
    } catch (e) {
      Plotly.purge(el);
      el.textContent = 'Correlation not loaded: ' + e.message;
    }
  }

  /** Pearson's r of every pair, over the timestamps where both have a value. */
  function correlation(cols, names) {
    const n = names.length;
    const z = [];
    for (let i = 0; i < n; i += 1) {
      z.push([]);
      for (let j = 0; j < n; j += 1) {
        const a = cols[names[i]], b = cols[names[j]];
        let k = 0, sa = 0, sb = 0;
        for (let t = 0; t < a.length; t += 1) if (a[t] !== null && b[t] !== null) { k += 1; sa += a[t]; sb += b[t]; }
        if (k < 3) { z[i].push(null); continue; }
        const ma = sa / k, mb = sb / k;
        let saa = 0, sbb = 0, sab = 0;
        for (let t = 0; t < a.length; t += 1) {
          if (a[t] === null || b[t] === null) continue;
          saa += (a[t] - ma) ** 2; sbb += (b[t] - mb) ** 2; sab += (a[t] - ma) * (b[t] - mb);
        }
        z[i].push(saa && sbb ? sab / Math.sqrt(saa * sbb) : null);
      }
    }
    return z;
  }

  function drawMatrix(names, data) {
    const box = $('corr-matrix');
    box.replaceChildren();
    if (names.length < 2) {
      box.append(rigtel.h('p', { className: 'muted', text: 'Tick two or more channels to see how they move together.' }));
      return;
    }
    const a = align(data, names);
    const z = correlation(a.cols, names);
    state.matrix = { names: names, z: z };
    const head = rigtel.h('tr', {}, rigtel.h('th', {}));
    for (const n of names) head.append(rigtel.h('th', { scope: 'col', text: n }));
    const table = rigtel.h('table', { className: 'corr-matrix', id: 'corr-table' }, rigtel.h('thead', {}, head));
    const body = rigtel.h('tbody', {});
    names.forEach(function (row, i) {
      const tr = rigtel.h('tr', {}, rigtel.h('th', { scope: 'row', text: row }));
      names.forEach(function (col, j) {
        const r = z[i][j];
        const step = r === null ? null : Math.round(r * 5);
        const cls = step === null ? 'r-none' : step === 0 ? 'r-0' : (step < 0 ? 'r-n' : 'r-p') + Math.abs(step);
        tr.append(rigtel.h('td', { className: cls, text: r === null ? '—' : r.toFixed(2),
          title: row + ' vs ' + col + ': r = ' + (r === null ? 'not enough shared samples' : r.toFixed(3)) }));
      });
      body.append(tr);
    });
    table.append(body);
    box.append(table);
  }

  // -- performance KPIs (estimated from raw channels until the predictor runs) -------------

  const ACTIVITY_TEXT = [['drilling_h', 'drilling', '#3ddc84'], ['connection_h', 'connection', '#ffd23f'],
    ['tripping_in_h', 'tripping in', '#4cc9f0'], ['tripping_out_h', 'tripping out', '#b8b8ff'],
    ['circulating_h', 'circulating', '#00f5d4'], ['other_h', 'other / idle', '#ff9f1c'], ['no_data_h', 'no data', '#5a6a7a']];

  function kpiTable(id, head, rows, empty) {
    const box = $(id);
    if (!rows.length) { box.replaceChildren(rigtel.h('p', { className: 'muted', text: empty })); return; }
    const body = rigtel.h('tbody');
    for (const r of rows) {
      body.append(rigtel.h('tr', {}, ...r.map(function (cell, i) {
        return rigtel.h('td', { className: i === 0 ? 'time' : 'num', text: cell });
      })));
    }
    box.replaceChildren(rigtel.h('table', { className: 'grid', id: id + '-table' },
      rigtel.h('thead', {}, rigtel.h('tr', {}, ...head.map(function (t) { return rigtel.h('th', { text: t }); }))), body));
  }

  function speedText(s) {
    if (!s || s.ft_h === null) return 'none in range';
    return rigtel.fmtNumber(s.ft_h) + ' ft/h, ' + rigtel.fmtNumber(s.stands_per_h) + ' stands/h' +
      (s.running_ft_h !== null ? ' (' + rigtel.fmtNumber(s.running_ft_h) + ' ft/h out of slips)' : '');
  }

  function drawKpis(k) {
    $('kpi-source').textContent = '(' + k.source + ')';
    const missing = $('kpi-missing');
    missing.replaceChildren(...k.missing.map(function (m) {
      return rigtel.h('li', { text: m.kpi.replace(/_/g, ' ') + ' not computed: ' + m.reason });
    }), ...(k.notes || []).map(function (n) { return rigtel.h('li', { text: n }); }));
    missing.hidden = !missing.children.length;
    const chart = $('kpi-activity-chart');
    if (k.time_by_activity) {
      const t = k.time_by_activity;
      Plotly.react(chart, [{ type: 'bar', x: ACTIVITY_TEXT.map(function (a) { return a[1]; }),
        y: ACTIVITY_TEXT.map(function (a) { return t[a[0]]; }), marker: { color: ACTIVITY_TEXT.map(function (a) { return a[2]; }) },
        hovertemplate: '%{x}: %{y:.2f} h<extra></extra>' }],
      baseLayout({ height: 300, margin: { l: 60, r: 20, t: 10, b: 40 }, yaxis: axis({ title: { text: 'hours' } }), xaxis: axis() }), CONFIG);
    } else {
      Plotly.purge(chart);
      chart.textContent = 'No activity breakdown for this range.';
    }
    const states = $('kpi-rig-states');
    const byState = k.time_by_rig_state;
    states.hidden = !byState;
    states.textContent = byState ? 'By rig state: ' + Object.entries(byState).map(function (e) {
      return e[0].replace(/_/g, ' ') + ' ' + rigtel.fmtNumber(e[1]) + ' h';
    }).join(' · ') : '';
    const c = k.connection_summary;
    const speed = k.tripping_speed || {};
    $('kpi-facts').replaceChildren(...[
      ['connections', c ? String(c.count) : 'not computed'],
      ['slip to slip, median', c ? rigtel.fmtDuration(c.median_s) : '—'],
      ['slip to slip, 90th percentile', c ? rigtel.fmtDuration(c.p90_s) : '—'],
      ['weight to weight, median', c ? rigtel.fmtDuration(c.weight_to_weight_median_s) : '—'],
      ['tripping in', speedText(speed.in)],
      ['tripping out', speedText(speed.out)],
      ['in slips below', k.thresholds.in_slips_below_klbf === null ? 'no slips level found' : k.thresholds.in_slips_below_klbf + ' klbf'],
    ].flatMap(function (row) { return [rigtel.h('dt', { text: row[0] }), rigtel.h('dd', { text: row[1] })]; }));
    kpiTable('kpi-connections', ['start (UTC)', 'hole depth [ft]', 'slip to slip', 'weight to weight'],
      k.connections.map(function (x) {
        return [rigtel.fmtTime(x.start), rigtel.fmtNumber(x.depth_ft), rigtel.fmtDuration(x.duration_s), rigtel.fmtDuration(x.weight_to_weight_s)];
      }), 'No connections found in this range.');
    kpiTable('kpi-rop', ['start (UTC)', 'from [ft]', 'to [ft]', 'on bottom', 'ROP [ft/h]'],
      k.rop_per_stand.map(function (x) {
        return [rigtel.fmtTime(x.start), rigtel.fmtNumber(x.start_depth_ft), rigtel.fmtNumber(x.end_depth_ft),
          rigtel.fmtDuration(x.on_bottom_s), rigtel.fmtNumber(x.rop_ft_h) + (x.partial ? ' (part stand)' : '')];
      }), 'No drilling found in this range.');
    kpiTable('kpi-trips', ['start (UTC)', 'direction', 'from [ft]', 'to [ft]', 'duration', 'ft/h'],
      k.trips.map(function (x) {
        return [rigtel.fmtTime(x.start), x.direction, rigtel.fmtNumber(x.from_depth_ft), rigtel.fmtNumber(x.to_depth_ft),
          rigtel.fmtDuration(x.duration_s), rigtel.fmtNumber(x.ft_h)];
      }), 'No trips found in this range.');
    kpiTable('kpi-npt', ['start (UTC)', 'end (UTC)', 'duration', 'activity', 'bit depth [ft]'],
      k.npt.map(function (x) {
        return [rigtel.fmtTime(x.start), rigtel.fmtTime(x.end), rigtel.fmtDuration(x.duration_s), x.activity, rigtel.fmtNumber(x.bit_depth_ft)];
      }), 'No stretches without progress of 15 min or more.');
  }

  async function loadKpis(r) {
    const note = $('kpi-status');
    note.classList.remove('error');
    note.textContent = 'computing KPIs…';
    try {
      const k = await rigtel.api('/api/kpis?' + new URLSearchParams({ from: String(r.from), to: String(r.to) }));
      drawKpis(k);
      note.textContent = k.samples + ' samples from ' + rigtel.fmtTime(r.from) + ' to ' + rigtel.fmtTime(r.to) +
        ' UTC.';
      $('performance').dataset.loaded = String(Date.now());
    } catch (e) {
      note.classList.add('error');
      note.textContent = 'KPIs not computed: ' + e.message;
    }
  }

  // -- start -----------------------------------------------------------------------------

  async function start() {
    let list;
    try {
      list = await rigtel.api('/api/channels');
    } catch (e) {
      $('channel-checks').replaceChildren(rigtel.h('p', { className: 'notice', text: 'Channels not available: ' + e.message + ' Retrying…' }));
      setTimeout(start, 5000);
      return;
    }
    state.info = {};
    for (const c of list) state.info[c.name] = c;
    state.order = list.map(function (c) { return c.name; });
    const params = new URLSearchParams(location.search);
    const wanted = (params.get('channels') || '').split(',').filter(function (n) { return state.info[n]; });
    buildChecks(wanted.length ? wanted : DEFAULT_CHANNELS.filter(function (n) { return state.info[n]; }));
    if (params.get('from') && params.get('to')) {
      $('range-preset').value = 'custom';
      $('range-from').value = rigtel.toInput(Number(params.get('from')));
      $('range-to').value = rigtel.toInput(Number(params.get('to')));
    } else {
      await applyPreset();
    }
    if (params.get('resolution')) $('resolution').value = params.get('resolution');
    updateExport(selected(), (function () { try { return range(); } catch (e) { return null; } })());
    load();
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('query').addEventListener('submit', function (e) { e.preventDefault(); load(); });
    $('export-format').addEventListener('change', function () {
      if (state.exportArgs) updateExport(state.exportArgs[0], state.exportArgs[1]);
    });
    $('range-preset').addEventListener('change', function () { applyPreset().then(load); });
    for (const id of ['range-from', 'range-to']) {
      $(id).addEventListener('change', function () {
        $('range-preset').value = 'custom';
        try { updateExport(selected(), range()); } catch (e) { /* shown on load */ }
      });
    }
    $('channel-checks').addEventListener('change', function () {
      try { updateExport(selected(), range()); } catch (e) { /* shown on load */ }
    });
    for (const id of ['scatter-x', 'scatter-y', 'scatter-c']) {
      $(id).addEventListener('change', function () { loadScatter(); });
    }
    start();
  });
})();
