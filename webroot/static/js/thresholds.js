/* Alerts view: the alarm-threshold editor.

   GET /api/thresholds lists every channel that can carry limits with the limits in force.
   Saving PUTs /api/thresholds/<channel>; the web program checks the limits (a 400 says what
   to change), publishes them on the bus, the predictor applies them at once and the saver
   stores them. The table is read back from storage until it shows the new setting, so what
   the page says is in force is what is stored. */
(function () {
  'use strict';

  const rigtel = window.rigtel;
  const LIMITS = ['ll', 'l', 'h', 'hh'];
  const FIELDS = LIMITS.concat(['deadband']);
  const CONFIRM_TRIES = 15;  // the saver commits on its own clock: read back for up to ~15 s
  const byChannel = new Map();

  function $(id) { return document.getElementById(id); }

  function setStatus(text, isError) {
    const el = $('th-status');
    el.textContent = text;
    el.classList.toggle('error', !!isError);
  }

  function fmt(v) { return v === null || v === undefined ? '' : String(v); }

  function unitOf(row) { return row && row.unit ? ' ' + row.unit : ''; }

  function hasSetting(row) { return row.ts !== null && row.ts !== undefined; }

  function summary(s, row) {
    const parts = [];
    for (const k of LIMITS) if (s[k] !== null) parts.push(k.toUpperCase() + ' ' + s[k] + unitOf(row));
    return parts.length ? parts.join(', ') : 'all limits off';
  }

  function renderTable() {
    const body = $('thresholds-table').tBodies[0];
    body.replaceChildren();
    const current = $('th-channel').value;
    const rows = Array.from(byChannel.values()).filter(hasSetting);
    for (const r of rows) {
      body.append(rigtel.h('tr', { className: r.channel === current ? 'editing' : null, dataset: { channel: r.channel } },
        rigtel.h('td', { text: r.channel }),
        rigtel.h('td', { text: r.unit || '' }),
        ...LIMITS.concat(['deadband']).map(function (k) { return rigtel.h('td', { className: 'num', text: fmt(r[k]) || '—' }); }),
        rigtel.h('td', { text: r.priority || 'default' }),
        rigtel.h('td', { className: 'time', text: rigtel.fmtTime(r.ts) }),
        rigtel.h('td', { text: r.by || '' }),
        rigtel.h('td', {}, rigtel.h('button', { type: 'button', className: 'edit', dataset: { channel: r.channel },
          text: 'Edit', 'aria-label': 'Edit the limits of ' + r.channel }))));
    }
    $('thresholds-empty').hidden = rows.length > 0;
    $('thresholds-table').hidden = rows.length === 0;
  }

  function fillForm() {
    const row = byChannel.get($('th-channel').value);
    if (!row) return;
    for (const k of FIELDS) $('th-' + k).value = fmt(row[k]);
    $('th-priority').value = row.priority || '';
    $('th-range').textContent = row.low !== null && row.low !== undefined
      ? row.channel + ' (' + row.description + '): plausible range ' + row.low + '..' + row.high + unitOf(row)
      : row.channel + ': a derived channel';
    renderTable();
  }

  async function load(keepForm) {
    const r = await rigtel.api('/api/thresholds');
    const sel = $('th-channel');
    const chosen = sel.value;
    byChannel.clear();
    for (const row of r.thresholds) byChannel.set(row.channel, row);
    if (sel.options.length !== byChannel.size) {
      sel.replaceChildren(...Array.from(byChannel.values()).map(function (row) {
        return rigtel.h('option', { value: row.channel, text: row.channel + ' — ' + row.description + (row.unit ? ' (' + row.unit + ')' : '') });
      }));
      const prio = $('th-priority');
      if (prio.options.length === 1) {
        for (const p of r.priorities) prio.append(rigtel.h('option', { value: p, text: p }));
      }
    }
    if (chosen && byChannel.has(chosen)) sel.value = chosen;
    if (keepForm) renderTable(); else fillForm();
    return r;
  }

  /** The form as the API wants it, or an error message for the operator. */
  function readForm() {
    const body = {};
    for (const k of FIELDS) {
      const raw = $('th-' + k).value.trim();
      if (raw === '') { body[k] = null; continue; }
      const v = Number(raw);
      if (!isFinite(v)) return { error: k.toUpperCase() + ' must be a number' };
      body[k] = v;
    }
    const set = LIMITS.filter(function (k) { return body[k] !== null; });
    for (let i = 1; i < set.length; i += 1) {
      if (!(body[set[i - 1]] < body[set[i]])) {
        return { error: set[i - 1].toUpperCase() + ' (' + body[set[i - 1]] + ') must be below ' +
          set[i].toUpperCase() + ' (' + body[set[i]] + '): the limits must rise LL < L < H < HH' };
      }
    }
    body.priority = $('th-priority').value || null;
    return { body: body };
  }

  function same(a, b) {
    return FIELDS.every(function (k) { return a[k] === b[k]; }) && (a.priority || null) === (b.priority || null);
  }

  async function save(body) {
    const channel = $('th-channel').value;
    const row = byChannel.get(channel);
    const button = $('th-save');
    button.disabled = true;
    setStatus('Saving ' + channel + '…');
    try {
      const sent = await rigtel.api('/api/thresholds/' + encodeURIComponent(channel), {
        method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      setStatus('Sent ' + channel + ' (' + summary(sent, row) + '); waiting for storage…');
      for (let i = 0; i < CONFIRM_TRIES; i += 1) {
        await new Promise(function (resolve) { setTimeout(resolve, 1000); });
        await load(true);
        const now = byChannel.get(channel);
        if (now && hasSetting(now) && same(now, sent)) {
          setStatus('In force for ' + channel + ': ' + summary(now, now) + ' · ' + rigtel.fmtTime(now.ts) + ' UTC');
          $('th-status').dataset.saved = channel;
          return;
        }
      }
      setStatus('Sent ' + channel + ', but storage has not confirmed it yet: is the saver running?', true);
    } catch (e) {
      setStatus('Not saved: ' + e.message, true);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('th-channel').addEventListener('change', function () { setStatus(''); fillForm(); });
    $('threshold-form').addEventListener('submit', function (e) {
      e.preventDefault();
      const f = readForm();
      if (f.error) { setStatus('Not saved: ' + f.error, true); return; }
      save(f.body);
    });
    $('th-clear').addEventListener('click', function () {
      save({ hh: null, h: null, l: null, ll: null, deadband: null, priority: null });
    });
    $('thresholds-table').addEventListener('click', function (e) {
      const b = e.target.closest('button.edit');
      if (!b) return;
      $('th-channel').value = b.dataset.channel;
      setStatus('');
      fillForm();
      $('th-channel').focus();
    });
    load(false).catch(function (e) { setStatus('Thresholds not available: ' + e.message, true); });
  });
})();
