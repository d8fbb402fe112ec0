/* Alerts view: the active alarms with an Acknowledge button each, and the history of alarm
   events filtered by time range and kind.

   The active list is common.js's (the live stream, checked against storage every few
   seconds). Acknowledging POSTs /api/alerts/<id>/ack; the web program publishes the new state
   on the bus, so the saver stores it and every open dashboard hears it on its stream. */
(function () {
  'use strict';

  const rigtel = window.rigtel;
  rigtel.streamOptions = { rateHz: 1 };

  const KNOWN_KINDS = ['kick', 'loss', 'washout', 'packoff', 'stuck_pipe', 'anomaly'];
  const HISTORY_REFRESH_MS = 10000;
  const ACK_RETRIES = 5;  // a brand-new alarm may not be stored yet: the saver writes in batches
  const pending = new Map();  // id -> text shown while an acknowledgement is on its way
  const kinds = new Set(KNOWN_KINDS);

  function $(id) { return document.getElementById(id); }

  function badge(cls, text) { return rigtel.h('span', { className: 'badge ' + cls, text: text }); }

  function renderActive(list) {
    const body = $('alerts-active').tBodies[0];
    body.replaceChildren();
    for (const a of list) {
      if (a.kind) kinds.add(a.kind);
      const canAck = a.state === 'active_unack' || a.state === 'cleared_unack';
      const note = pending.get(String(a.id));
      const action = canAck
        ? rigtel.h('button', { type: 'button', className: 'primary ack', id: 'ack-' + a.id, dataset: { id: a.id },
          text: note || 'Acknowledge', disabled: note ? '' : null, 'aria-label': 'Acknowledge ' + (a.kind || '') + ' alarm ' + a.id })
        : rigtel.h('span', { className: 'muted', text: note || 'acknowledged' });
      body.append(rigtel.h('tr', { className: 'state-' + a.state, dataset: { id: a.id, state: a.state } },
        rigtel.h('td', { className: 'time', text: rigtel.fmtTime(a.ts) }),
        rigtel.h('td', {}, badge('prio-' + (a.priority || 'unknown'), a.priority || '—')),
        rigtel.h('td', { text: (a.kind || '—').replace(/_/g, ' ') }),
        rigtel.h('td', { text: a.message || '' }),
        rigtel.h('td', {}, badge('state-' + a.state, rigtel.stateText(a.state))),
        rigtel.h('td', {}, action)));
    }
    $('active-empty').hidden = list.length > 0;
    $('alerts-active').hidden = list.length === 0;
    renderKinds();
  }

  async function acknowledge(id, button) {
    pending.set(id, 'acknowledging…');
    button.disabled = true;
    button.textContent = 'acknowledging…';
    for (let attempt = 0; attempt <= ACK_RETRIES; attempt += 1) {
      try {
        const r = await rigtel.api('/api/alerts/' + encodeURIComponent(id) + '/ack', { method: 'POST' });
        pending.delete(id);
        const a = rigtel.alarms.get(id);
        // the stream brings the stored state in a moment; show the answer meanwhile
        if (a && a.state !== r.state) { a.state = r.state; a.seenAt = Date.now(); }
        if (r.state === 'normal') rigtel.alarms.delete(id);
        rigtel.alarmsChanged();
        return;
      } catch (e) {
        if (e.status === 404 && attempt < ACK_RETRIES) {
          pending.set(id, 'waiting for storage…');
          await new Promise(function (resolve) { setTimeout(resolve, 1000); });
          continue;
        }
        pending.delete(id);
        setStatus('Could not acknowledge ' + id + ': ' + e.message, true);
        rigtel.pollAlarms();
        return;
      }
    }
  }

  // -- history ---------------------------------------------------------------------------

  function setStatus(text, isError) {
    const el = $('history-status');
    el.textContent = text;
    el.classList.toggle('error', !!isError);
  }

  function renderKinds() {
    const sel = $('history-kind');
    const current = sel.value;
    const have = new Set(Array.from(sel.options).map(function (o) { return o.value; }));
    for (const k of Array.from(kinds).sort()) {
      if (!have.has(k)) sel.append(rigtel.h('option', { value: k, text: k.replace(/_/g, ' ') }));
    }
    sel.value = current;
  }

  function applyPreset() {
    const preset = $('history-preset').value;
    if (preset === 'custom') return;
    // alarms may carry rig time that runs ahead of the clock (simulator): end at the newest
    const end = Math.max(Date.now(), rigtel.link.lastDataTs || 0) + 60000;
    $('history-to').value = rigtel.toInput(end);
    $('history-from').value = rigtel.toInput(end - Number(preset));
  }

  let loading = false;
  async function loadHistory() {
    if (loading) return;
    applyPreset();
    const from = rigtel.fromInput($('history-from').value);
    const to = rigtel.fromInput($('history-to').value);
    if (!isFinite(from) || !isFinite(to) || to <= from) {
      setStatus('Enter a time range whose end comes after its start.', true);
      return;
    }
    const q = new URLSearchParams({ state: 'all', from: String(from), to: String(to), limit: '500' });
    if ($('history-kind').value) q.set('kind', $('history-kind').value);
    loading = true;
    try {
      const rows = await rigtel.api('/api/alerts?' + q);
      const body = $('alerts-history').tBodies[0];
      body.replaceChildren();
      for (const a of rows) {
        if (a.kind) kinds.add(a.kind);
        body.append(rigtel.h('tr', { dataset: { id: a.id, state: a.state } },
          rigtel.h('td', { className: 'time', text: rigtel.fmtTime(a.ts) }),
          rigtel.h('td', {}, badge('prio-' + (a.priority || 'unknown'), a.priority || '—')),
          rigtel.h('td', { text: (a.kind || '—').replace(/_/g, ' ') }),
          rigtel.h('td', {}, badge('state-' + a.state, rigtel.stateText(a.state))),
          rigtel.h('td', { text: a.message || '' }),
          rigtel.h('td', { text: a.by ? 'acknowledged by ' + a.by : (a.src || '') })));
      }
      renderKinds();
      setStatus(rows.length + ' event(s)' + (rows.length >= 500 ? ' (the newest 500; narrow the range to see more)' : '') +
        ' · updated ' + rigtel.fmtTime(Date.now()).slice(11) + ' UTC');
    } catch (e) {
      setStatus('History not available: ' + e.message, true);
    } finally {
      loading = false;
    }
  }

  let soon = null;
  function refreshSoon() {
    clearTimeout(soon);
    soon = setTimeout(loadHistory, 1500);  // after the saver has had time to store it
  }

  document.addEventListener('DOMContentLoaded', function () {
    rigtel.on('alarms', function (list) {
      renderActive(list);
      // an alarm the history does not list yet: look again once the saver has stored it
      const listed = new Set(Array.from(document.querySelectorAll('#alerts-history tr')).map(function (r) { return r.dataset.id; }));
      if (list.some(function (a) { return !listed.has(String(a.id)); })) refreshSoon();
    });
    rigtel.on('alert', refreshSoon);
    renderActive(rigtel.sortedAlarms());
    $('alerts-active').addEventListener('click', function (e) {
      const b = e.target.closest('button.ack');
      if (b && !b.disabled) acknowledge(b.dataset.id, b);
    });
    $('history-filters').addEventListener('submit', function (e) { e.preventDefault(); loadHistory(); });
    $('history-preset').addEventListener('change', loadHistory);
    $('history-kind').addEventListener('change', loadHistory);
    for (const id of ['history-from', 'history-to']) {
      $(id).addEventListener('change', function () { $('history-preset').value = 'custom'; });
    }
    renderKinds();
    loadHistory();
    setInterval(loadHistory, HISTORY_REFRESH_MS);
  });
})();
