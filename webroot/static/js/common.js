/* Shared by every page: formatting, the JSON API, the live link (Server-Sent Events from
   /api/stream, received by feed.js in a Web Worker and handed over in batches, so that a
   page busy drawing never delays receipt), the connection indicator and the active-alarm strip.

   A page script sets rigtel.streamOptions ({channels, rateHz}) and subscribes with
   rigtel.on('frames' | 'snapshot' | 'alert' | 'status' | 'link' | 'alarms', fn) before
   DOMContentLoaded; this file opens the stream then. Times are UTC epoch milliseconds. */
(function () {
  'use strict';

  const rigtel = window.rigtel = window.rigtel || {};
  const STALE_AFTER_S = 5;
  const ALARM_POLL_MS = 10000;
  const ENDED_STATES = new Set(['normal', 'cleared_ack', 'cleared', 'shelved']);
  const PRIORITY_RANK = { critical: 0, urgent: 0, high: 1, medium: 2, low: 3 };
  const STATE_TEXT = {
    active_unack: 'unacknowledged', active_ack: 'acknowledged',
    cleared_unack: 'cleared, not acknowledged', normal: 'normal',
  };

  // -- formatting ---------------------------------------------------------------------

  function pad(n, width) { return String(n).padStart(width || 2, '0'); }

  /** "2026-11-29 21:39:02" in UTC. */
  rigtel.fmtTime = function (ms) {
    if (ms === null || ms === undefined) return '—';
    return new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
  };
  /** The value of a datetime-local input holding `ms` as UTC. */
  rigtel.toInput = function (ms) { return new Date(ms).toISOString().slice(0, 19); };
  /** Epoch ms from a datetime-local input read as UTC, or NaN. */
  rigtel.fromInput = function (value) {
    if (!value) return NaN;
    return Date.parse(value.length === 16 ? value + ':00Z' : value + 'Z');
  };
  // one formatter per number of digits: toLocaleString with options builds a new one per call
  const NUMBER_FORMATS = [0, 1, 2, 3].map(function (digits) {
    return new Intl.NumberFormat('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
  });
  rigtel.fmtNumber = function (v) {
    if (v === null || v === undefined || !isFinite(v)) return '—';
    const a = Math.abs(v);
    return NUMBER_FORMATS[a >= 1000 ? 0 : a >= 100 ? 1 : a >= 1 ? 2 : 3].format(v);
  };
  rigtel.fmtCount = function (n) {
    if (n === null || n === undefined || !isFinite(n)) return '—';
    return Math.round(n).toLocaleString('en-US');
  };
  rigtel.fmtBytes = function (n) {
    if (n === null || n === undefined) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
  };
  rigtel.fmtDuration = function (s) {
    if (s === null || s === undefined || !isFinite(s)) return '—';
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + pad(Math.floor(s % 60)) + ' s';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + pad(Math.floor(s / 60 % 60)) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor(s / 3600 % 24) + ' h';
  };
  rigtel.stateText = function (state) { return STATE_TEXT[state] || state || '—'; };
  rigtel.priorityRank = function (p) { return p in PRIORITY_RANK ? PRIORITY_RANK[p] : 4; };

  /** An element: h('td', {className: 'num', text: '3'}, child, ...). Text only, never HTML. */
  rigtel.h = function (tag, props) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'text') el.textContent = v;
      else if (k === 'className') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v);
    }
    for (let i = 2; i < arguments.length; i += 1) {
      const c = arguments[i];
      if (c !== null && c !== undefined && c !== false) el.append(c);
    }
    return el;
  };

  // -- the JSON API -------------------------------------------------------------------

  /** fetch JSON from the API; throws an Error carrying the server's message. */
  rigtel.api = async function (path, options) {
    const opts = Object.assign({ headers: {}, credentials: 'same-origin', cache: 'no-store' }, options || {});
    opts.headers = Object.assign({ Accept: 'application/json' }, opts.headers);
    if (opts.method && opts.method !== 'GET') opts.headers['X-Requested-With'] = 'rigtel';
    let response;
    try {
      response = await fetch(path, opts);
    } catch (e) {
      throw new Error('the appliance did not answer (' + e.message + ')');
    }
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const err = new Error((body && body.error) || ('HTTP ' + response.status + ' from ' + path));
      err.status = response.status;
      throw err;
    }
    return body;
  };

  // -- events between this file and the page ---------------------------------------------

  const listeners = {};
  rigtel.on = function (name, fn) { (listeners[name] = listeners[name] || []).push(fn); };
  function emit(name, data) {
    for (const fn of listeners[name] || []) {
      try { fn(data); } catch (e) { console.error('rigtel: ' + name + ' handler failed', e); }
    }
  }

  // -- the live link ------------------------------------------------------------------

  const link = rigtel.link = {
    state: 'connecting',    // connecting | live | stale | nodata | lost
    openedOnce: false,
    lastFrameWall: 0,       // performance.now() when the last frame arrived
    serverAgeS: null,       // data_age_s from the server, and when we heard it
    serverAgeAt: 0,
    lastEventId: null,
    lastDataTs: null,       // newest data timestamp seen (rig time, epoch ms)
    framesReceived: 0,
    dropped: 0,             // frames the feed let go because this page did not take them
    readyState: 0,          // of the stream's EventSource (0 connecting, 1 open, 2 closed)
    transport: null,        // 'worker' or 'page': where the feed runs
    ack: function () {},
  };

  /** Seconds since the last frame anywhere on the bus, as best known; null if never. */
  rigtel.dataAgeS = function () {
    const now = performance.now();
    const mine = link.lastFrameWall ? (now - link.lastFrameWall) / 1000 : null;
    const server = link.serverAgeS !== null ? link.serverAgeS + (now - link.serverAgeAt) / 1000 : null;
    if (mine === null) return server;
    if (server === null) return mine;
    return Math.min(mine, server);
  };

  function streamUrl() {
    const o = rigtel.streamOptions || {};
    const q = new URLSearchParams();
    if (o.channels && o.channels.length) q.set('channels', o.channels.join(','));
    if (o.rateHz) q.set('rate_hz', String(o.rateHz));
    const s = q.toString();
    return '/api/stream' + (s ? '?' + s : '');
  }

  /** Measurements for the benchmark and the tests, off unless asked for (rigtel.perf.start()):
      per live frame, wall-clock ms from its timestamp to its receipt (in the feed) and to its
      handling here; pages add their own (live.js: shown in the tiles, drawn on a track). */
  const PERF_LIMIT = 200000;
  const perf = rigtel.perf = {
    on: false,
    series: {},
    start: function () { perf.on = true; perf.series = {}; },
    add: function (name, value) {
      const s = perf.series[name] || (perf.series[name] = []);
      if (s.length < PERF_LIMIT) s.push(value);
    },
    take: function () { const s = perf.series; perf.series = {}; return s; },
  };

  /** Start the feed (feed.js) in a Web Worker, or in this page if no worker can run. */
  function startFeed() {
    const script = document.body.dataset.feed;
    let send = null;
    function inPage(why) {
      console.warn('rigtel: the live feed runs in the page (' + why + ')');
      link.transport = 'page';
      const receive = rigtel.createFeed(function (msg) { onFeed(msg); });
      send = receive;
      receive({ type: 'open', url: streamUrl() });
    }
    link.ack = function () { if (send) send({ type: 'ack' }); };
    if (typeof Worker === 'undefined' || !script) { inPage('no Web Worker'); return; }
    let worker;
    try {
      worker = new Worker(script);
    } catch (e) {
      inPage(e.message);
      return;
    }
    let heard = false;
    worker.addEventListener('message', function (e) { heard = true; onFeed(e.data); });
    worker.addEventListener('error', function (e) {
      if (heard) return;  // the worker ran and later failed: its own retries cover the stream
      e.preventDefault();
      worker.terminate();
      inPage('the worker did not start: ' + (e.message || 'error'));
    });
    link.transport = 'worker';
    send = function (msg) { worker.postMessage(msg); };
    send({ type: 'open', url: streamUrl() });
  }

  function onFeed(msg) {
    if (msg.type === 'state') {
      link.readyState = msg.readyState;
      link.openedOnce = link.openedOnce || msg.opened;
      evaluate();
      return;
    }
    if (msg.type !== 'batch') return;
    const wallNow = Date.now();
    const perfNow = performance.now();
    if (msg.lastEventId) link.lastEventId = msg.lastEventId;
    link.dropped += msg.dropped;
    link.readyState = EventSource.OPEN;  // a batch comes only from an open stream
    link.openedOnce = true;
    if (msg.snapshot) {
      const d = msg.snapshot;
      link.serverAgeS = d.data_age_s;
      link.serverAgeAt = perfNow;
      for (const pair of Object.values(d.values || {})) {
        if (link.lastDataTs === null || pair[0] > link.lastDataTs) link.lastDataTs = pair[0];
      }
      for (const a of d.alerts || []) applyAlarm(a, true);
      emitAlarms();
      emit('snapshot', d);
    }
    if (msg.chunks.length) {
      const frames = [];
      for (const c of msg.chunks) {
        if (!c.backfill) {
          link.lastFrameWall = Math.max(link.lastFrameWall, perfNow - (wallNow - c.recvAt));
          if (perf.on) for (const f of c.frames) { perf.add('receipt', c.recvAt - f[0]); perf.add('handled', wallNow - f[0]); }
        }
        const last = c.frames[c.frames.length - 1][0];
        if (link.lastDataTs === null || last > link.lastDataTs) link.lastDataTs = last;
        link.framesReceived += c.frames.length;
        for (const f of c.frames) frames.push(f);
      }
      emit('frames', { frames: frames, dropped: msg.dropped, chunks: msg.chunks });
    }
    for (const a of msg.alerts) {
      applyAlarm(a, true);
      emit('alert', a);
    }
    if (msg.alerts.length) emitAlarms();
    if (msg.status) {
      link.serverAgeS = msg.status.data_age_s;
      link.serverAgeAt = perfNow;
      emit('status', msg.status);
    }
    evaluate();
    link.ack();  // handled: the feed may send what has gathered meanwhile
  }

  function evaluate() {
    const age = rigtel.dataAgeS();
    let state;
    if (link.readyState !== EventSource.OPEN) state = link.openedOnce ? 'lost' : 'connecting';
    else if (age === null) state = 'nodata';
    else if (age > STALE_AFTER_S) state = 'stale';
    else state = 'live';
    const text = {
      connecting: 'connecting…',
      live: 'live',
      nodata: 'no data yet',
      stale: 'data stale · ' + rigtel.fmtDuration(age) + ' old',
      lost: 'link lost · reconnecting',
    }[state];
    const box = document.getElementById('link-state');
    if (box) {
      box.dataset.state = state;
      document.getElementById('link-text').textContent = text;
      box.title = age === null ? 'no data has arrived' : 'last data ' + rigtel.fmtDuration(age) + ' ago';
    }
    document.body.classList.toggle('stale', state === 'stale' || state === 'nodata');
    document.body.classList.toggle('lost', state === 'lost');
    const changed = state !== link.state;
    link.state = state;
    emit('link', { state: state, ageS: age, text: text, changed: changed });
  }

  // -- alarms -------------------------------------------------------------------------

  const alarms = rigtel.alarms = new Map();  // id -> latest event, with seenAt (ms, this clock)

  function applyAlarm(event, fromStream) {
    if (!event || !event.id) return;
    const id = String(event.id);
    if (ENDED_STATES.has(event.state)) alarms.delete(id);
    else alarms.set(id, Object.assign({}, event, { seenAt: Date.now(), fromStream: fromStream }));
  }

  /** Active alarms, most urgent first: unacknowledged, then by priority, then newest. */
  rigtel.sortedAlarms = function () {
    return Array.from(alarms.values()).sort(function (a, b) {
      const ua = a.state === 'active_unack' ? 0 : 1;
      const ub = b.state === 'active_unack' ? 0 : 1;
      return ua - ub || rigtel.priorityRank(a.priority) - rigtel.priorityRank(b.priority) || (b.ts || 0) - (a.ts || 0);
    });
  };

  function emitAlarms() {
    renderStrip();
    emit('alarms', rigtel.sortedAlarms());
  }
  rigtel.alarmsChanged = emitAlarms;

  /** Refresh from storage: the database is the record; what the stream told us in the last
      few seconds wins, since the saver may not have written it yet. */
  rigtel.pollAlarms = async function () {
    const asked = Date.now();
    let rows;
    try {
      rows = await rigtel.api('/api/alerts?state=active');
    } catch (e) {
      return;  // no database yet, or the link is down: the indicator says so
    }
    const recent = asked - 3000;
    const seen = new Set();
    for (const r of rows) {
      const id = String(r.id);
      seen.add(id);
      const mine = alarms.get(id);
      if (mine && mine.seenAt > recent) continue;
      applyAlarm(r, false);
    }
    for (const [id, a] of alarms) {
      if (!seen.has(id) && a.seenAt <= recent) alarms.delete(id);
    }
    emitAlarms();
  };

  let baseTitle = null;

  function renderStrip() {
    const strip = document.getElementById('alarm-strip');
    if (!strip) return;
    const list = rigtel.sortedAlarms();
    // the tab's title counts unacknowledged alarms, for a dashboard left in a background tab
    if (baseTitle === null) baseTitle = document.title;
    const unacked = list.filter(function (a) { return a.state === 'active_unack'; }).length;
    document.title = (unacked ? '(' + unacked + ' ALARM' + (unacked > 1 ? 'S' : '') + ') ' : '') + baseTitle;
    strip.replaceChildren();
    if (!list.length) { strip.hidden = true; delete strip.dataset.level; return; }
    const level = list.some(function (a) { return a.state === 'active_unack'; }) ? 'unack'
      : list.some(function (a) { return a.state === 'active_ack'; }) ? 'ack' : 'cleared';
    strip.dataset.level = level;
    strip.append(rigtel.h('span', { className: 'alarm-count', text: list.length === 1 ? 'ALARM' : list.length + ' ALARMS' }));
    for (const a of list.slice(0, 3)) {
      strip.append(rigtel.h('span', { className: 'alarm-item', dataset: { id: a.id, state: a.state } },
        rigtel.h('span', { className: 'alarm-kind', text: (a.kind || 'alarm').replace(/_/g, ' ') }),
        rigtel.h('span', { className: 'alarm-message', text: a.message || a.id }),
        rigtel.h('span', { className: 'alarm-state', text: rigtel.stateText(a.state) })));
    }
    if (list.length > 3) strip.append(rigtel.h('span', { text: '+' + (list.length - 3) + ' more' }));
    if (document.body.dataset.page !== 'alerts') {
      strip.append(rigtel.h('a', { href: '/alerts', text: 'Acknowledge on Alerts →' }));
    }
    strip.hidden = false;
  }

  // -- who is logged in, and logging out ---------------------------------------------------

  /** Basic auth has no logout: the browser keeps the credentials until it is given others.
      The server accepts a placeholder user only on /logout (see appliance/web/auth.py), so
      after this request the browser holds the placeholder and the next page asks again. */
  rigtel.logout = function () {
    return new Promise(function (resolve) {
      const xhr = new XMLHttpRequest();
      xhr.open('GET', '/logout', true, 'logged-out', 'x' + Math.random().toString(36).slice(2));
      xhr.onloadend = function () { resolve(xhr.status); };
      xhr.send();
    }).then(function (status) {
      document.body.dataset.loggedOut = String(status);
      window.location.assign('/');
    });
  };

  async function showUser() {
    const el = document.getElementById('who');
    if (!el) return;
    try {
      const me = await rigtel.api('/api/me');
      rigtel.user = me;
      el.textContent = me.user + ' (' + me.role + ')';
      document.body.dataset.role = me.role;
    } catch (e) {
      el.textContent = '';
    }
  }

  // -- start ----------------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', function () {
    showUser();
    const logout = document.getElementById('logout');
    if (logout) {
      logout.addEventListener('click', function (e) { e.preventDefault(); rigtel.logout(); });
    }
    startFeed();
    setInterval(evaluate, 1000);
    rigtel.pollAlarms();
    setInterval(rigtel.pollAlarms, ALARM_POLL_MS);
  });
})();
