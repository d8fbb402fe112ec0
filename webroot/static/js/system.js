/* System view: every program's state (from supervisord, through /api/system), this web
   program's bus statistics with rates, the database, free disk and the last backup.
   Refreshed every REFRESH_MS. */
(function () {
  'use strict';

  const rigtel = window.rigtel;
  rigtel.streamOptions = { rateHz: 1 };

  const REFRESH_MS = 3000;
  const DISK_LOW = 0.1;  // free fraction below which the disk is flagged
  let previous = null;   // {at, received} for rates

  function $(id) { return document.getElementById(id); }

  function facts(dl, rows) {
    dl.replaceChildren();
    for (const [name, value, bad] of rows) {
      dl.append(rigtel.h('dt', { text: name }), rigtel.h('dd', { text: value, className: bad ? 'bad' : null }));
    }
  }

  function rate(now, key, received) {
    if (!previous || !(key in previous.received) || !(key in received)) return '';
    const dt = (now - previous.at) / 1000;
    if (dt <= 0) return '';
    return ' · ' + rigtel.fmtNumber((received[key] - previous.received[key]) / dt) + '/s';
  }

  function byteRate(now, received) {
    if (!previous || !('bytes' in previous.received)) return '';
    const dt = (now - previous.at) / 1000;
    return dt > 0 ? ' · ' + rigtel.fmtBytes(Math.round((received.bytes - previous.received.bytes) / dt)) + '/s' : '';
  }

  function render(s) {
    const now = performance.now();
    // programs
    const err = $('programs-error');
    err.hidden = !s.programs_error;
    err.textContent = s.programs_error ? 'Program states are not available: ' + s.programs_error +
      '. Under supervisord (make run, or installed) they show here; `supervisorctl status` asks it directly.' : '';
    const body = $('programs').tBodies[0];
    body.replaceChildren();
    for (const p of s.programs || []) {
      body.append(rigtel.h('tr', { dataset: { program: p.name, state: p.state } },
        rigtel.h('td', { text: p.name }),
        rigtel.h('td', {}, rigtel.h('span', { className: 'badge ' + p.state, text: p.state })),
        rigtel.h('td', { className: 'num', text: p.pid ? String(p.pid) : '—' }),
        rigtel.h('td', { className: 'time', text: p.since ? rigtel.fmtTime(p.since * 1000) : '—' }),
        rigtel.h('td', { text: p.description || '' })));
    }
    $('programs').hidden = !(s.programs || []).length;

    // bus
    const b = s.bus || {};
    const rec = b.received || {};
    const age = b.data_age_s;
    facts($('bus-facts'), [
      ['messages received', rigtel.fmtCount(rec.messages) + rate(now, 'messages', rec)],
      ['frames received', rigtel.fmtCount(rec.frames) + rate(now, 'frames', rec)],
      ['bytes received', rigtel.fmtBytes(rec.bytes) + byteRate(now, rec)],
      ['rejected messages', rigtel.fmtCount(rec.rejected), rec.rejected > 0],
      ['sequence gaps', rigtel.fmtCount(b.gaps), b.gaps > 0],
      ['messages lost', rigtel.fmtCount(b.lost), b.lost > 0],
      ['last data', age === null || age === undefined ? 'none yet' : rigtel.fmtDuration(age) + ' ago', age === null || age > 5],
      ['live streams open', String(b.streams ?? '—')],
    ]);
    previous = { at: now, received: Object.assign({}, rec) };

    // rig data sources, from their heartbeats
    const box = $('sources');
    box.replaceChildren();
    const sources = s.sources || [];
    $('sources-none').hidden = sources.length > 0;
    for (const src of sources) {
      const st = src.stats || {};
      const dl = rigtel.h('dl', { className: 'facts', dataset: { src: src.src } });
      const rows = [['source', src.src + ' (' + src.program + ')'],
                    ['last heartbeat', rigtel.fmtDuration(src.heard_s_ago) + ' ago', src.heard_s_ago > 10]];
      if (src.program === 'wits0') {
        const unmapped = Object.entries(st.unmapped_codes || {});
        const bad = Object.entries(st.bad_by_reason || {});
        rows.push(
          ['link', st.connected ? 'connected to ' + st.peer : 'not connected (' + st.mode + ')', !st.connected],
          ['frames', rigtel.fmtCount(st.frames) + ' · ' + rigtel.fmtNumber(st.frames_per_s) + '/s'],
          ['last frame', st.last_frame_age_s === null || st.last_frame_age_s === undefined ? 'none yet'
            : rigtel.fmtDuration(st.last_frame_age_s) + ' ago', !(st.last_frame_age_s < 30)],
          ['bad lines', rigtel.fmtCount(st.bad_lines) + (bad.length ? ' (' + bad.map(function (e) { return e[0] + ': ' + e[1]; }).join(', ') + ')' : ''), st.bad_lines > 0],
          ['unmapped WITS0 codes', unmapped.length ? unmapped.map(function (e) { return e[0] + ' ×' + e[1]; }).join(', ') + ' — add them to the mapping file' : 'none', unmapped.length > 0],
          ['reconnects', rigtel.fmtCount(st.reconnects)]);
      } else if (src.program === 'replay') {
        rows.push(['file', st.file || '—'], ['rows', rigtel.fmtCount(st.rows) + ' · ' + rigtel.fmtNumber(st.rows_per_s) + '/s']);
      } else if (src.program === 'wits0-out') {
        rows.push(['clients', (st.clients || []).join(', ') || (st.enabled ? 'none connected' : 'off')],
                  ['frames sent', rigtel.fmtCount(st.frames_sent)]);
      } else {
        rows.push(['frames', rigtel.fmtCount(st.frames)], ['activity', st.activity || '—']);
      }
      facts(dl, rows);
      box.append(dl);
    }

    // database
    const d = s.database || {};
    const bytes = d.bytes || {};
    const total = Object.values(bytes).reduce(function (a, v) { return a + v; }, 0);
    const gaps = d.gaps || [0, 0];
    facts($('db-facts'), [
      ['file', d.path || '—'],
      ['size', rigtel.fmtBytes(total) + (bytes['-wal'] ? ' (of which write-ahead log ' + rigtel.fmtBytes(bytes['-wal']) + ')' : '')],
      ['channels stored', String(d.channels ?? '—')],
      ['first data', rigtel.fmtTime(d.first_ts) + ' UTC'],
      ['last data', rigtel.fmtTime(d.last_ts) + ' UTC'],
      ['dead letters (bad input kept)', rigtel.fmtCount(d.dead_letters), d.dead_letters > 0],
      ['gaps recorded', gaps[0] + ' (' + gaps[1] + ' message(s) missing)', gaps[0] > 0],
    ]);

    // disk and backups
    const disk = s.disk;
    const lb = s.last_backup;
    const freeFrac = disk ? disk.free_bytes / disk.total_bytes : null;
    facts($('disk-facts'), [
      ['free disk', disk ? rigtel.fmtBytes(disk.free_bytes) + ' of ' + rigtel.fmtBytes(disk.total_bytes) +
        ' (' + Math.round(freeFrac * 100) + '% free)' : 'unknown', freeFrac !== null && freeFrac < DISK_LOW],
      ['last backup', lb ? lb.name : 'none yet', !lb],
      ['backup size', lb ? rigtel.fmtBytes(lb.bytes) : '—'],
      ['backup age', lb ? rigtel.fmtDuration((Date.now() - lb.mtime_ms) / 1000) + ' (' + rigtel.fmtTime(lb.mtime_ms) + ' UTC)' : '—'],
    ]);
    const meter = $('disk-meter');
    meter.hidden = !disk;
    $('disk-meter-label').hidden = !disk;
    if (disk) {
      meter.value = 1 - freeFrac;
      $('disk-meter-label').textContent = 'disk used: ' + Math.round((1 - freeFrac) * 100) + '%';
    }

    // the dashboard's own TLS certificate: warned about 30 days before it expires
    const t = s.tls || {};
    const warning = t.error || t.warning;
    $('tls-warning').hidden = !warning;
    $('tls-warning').textContent = warning || '';
    facts($('tls-facts'), t.error ? [] : [
      ['subject', t.subject || '—'],
      ['issuer', (t.issuer || '—') + (t.self_signed ? ' (self-signed)' : '')],
      ['names', (t.names || []).join(', ') || '—'],
      ['expires', t.not_after_ms ? rigtel.fmtTime(t.not_after_ms) + ' UTC (' + Math.floor(t.days_left) + ' days)' : '—',
        !!t.expiring],
    ]);
  }

  async function refresh() {
    const status = $('system-status');
    try {
      const s = await rigtel.api('/api/system');
      render(s);
      status.textContent = 'updated ' + rigtel.fmtTime(Date.now()).slice(11) + ' UTC · every ' + REFRESH_MS / 1000 + ' s';
      status.classList.remove('error');
      document.body.dataset.systemLoaded = String(Date.now());
    } catch (e) {
      status.textContent = 'System state not available: ' + e.message;
      status.classList.add('error');
    }
  }

  document.addEventListener('DOMContentLoaded', function () {
    refresh();
    setInterval(refresh, REFRESH_MS);
  });
})();
