/* The live feed: reads /api/stream (Server-Sent Events) and hands the page batches.

   Normally this file runs as a dedicated Web Worker, so that receiving and parsing the
   stream never waits behind the page's drawing: while the page is busy (a chart redraw),
   what arrives is coalesced here into one batch, which the page gets as soon as it is free
   and has acknowledged the previous one. If the page cannot start a worker, common.js runs
   the same code in the page itself (this file is also loaded as a plain script for that).

   To the page, in order: {type: 'state', readyState, opened} when the connection opens or
   fails, and {type: 'batch', chunks, snapshot, alerts, status, lastEventId, dropped} where
   chunks is [{recvAt, backfill, frames: [[ts, {channel: value}], ...]}], recvAt being the
   wall clock (epoch ms) when the event arrived here. From the page: {type: 'open', url},
   {type: 'ack'}, {type: 'close'}. */
(function (scope) {
  'use strict';

  const RETRY_MS = 5000;           // after the server refused the stream (e.g. 503: too many open)
  const PENDING_FRAMES = 50000;    // held for a page that does not take them; beyond, the oldest go

  function createFeed(post) {
    let es = null;
    let url = null;
    let opened = false;
    let lastEventId = null;
    let waiting = false;            // a batch is with the page and not acknowledged yet
    let retry = null;
    let pending = empty();

    function empty() {
      return { type: 'batch', chunks: [], frames: 0, snapshot: null, alerts: [], status: null,
        lastEventId: null, dropped: 0 };
    }

    function hasNews() {
      return pending.chunks.length || pending.snapshot || pending.alerts.length || pending.status;
    }

    function flush() {
      if (waiting || !hasNews()) return;
      const batch = pending;
      pending = empty();
      batch.lastEventId = lastEventId;
      waiting = true;
      post(batch);
    }

    function state() {
      post({ type: 'state', readyState: es ? es.readyState : 2, opened: opened });
    }

    function open(manualLastId) {
      const u = manualLastId ? url + (url.includes('?') ? '&' : '?') + 'last_event_id=' + encodeURIComponent(manualLastId) : url;
      es = new EventSource(u);
      es.addEventListener('open', function () { opened = true; state(); });
      es.addEventListener('snapshot', function (e) {
        pending.snapshot = JSON.parse(e.data);
        flush();
      });
      es.addEventListener('frames', function (e) {
        const recvAt = Date.now();
        const d = JSON.parse(e.data);
        if (e.lastEventId) lastEventId = e.lastEventId;
        const frames = d.frames || [];
        if (frames.length) {
          pending.chunks.push({ recvAt: recvAt, backfill: !!d.backfill, frames: frames });
          pending.frames += frames.length;
          while (pending.frames > PENDING_FRAMES && pending.chunks.length > 1) {
            const old = pending.chunks.shift();
            pending.frames -= old.frames.length;
            pending.dropped += old.frames.length;
          }
        }
        flush();
      });
      es.addEventListener('alert', function (e) {
        pending.alerts.push(JSON.parse(e.data));  // every one, in order: none is coalesced away
        flush();
      });
      es.addEventListener('status', function (e) {
        pending.status = JSON.parse(e.data);
        flush();
      });
      es.addEventListener('error', function () {
        // The browser retries by itself (sending Last-Event-ID) unless the answer was not a
        // stream at all, e.g. 503 when too many are open: then it gives up and so we retry.
        if (es.readyState === EventSource.CLOSED) {
          es.close();
          retry = setTimeout(function () { retry = null; open(lastEventId); }, RETRY_MS);
        }
        state();
      });
    }

    return function receive(msg) {
      if (msg.type === 'open') {
        url = msg.url;
        open(null);
      } else if (msg.type === 'ack') {
        waiting = false;
        flush();
      } else if (msg.type === 'close') {
        if (retry !== null) clearTimeout(retry);
        if (es) es.close();
        es = null;
      }
    };
  }

  if (typeof WorkerGlobalScope !== 'undefined' && scope instanceof WorkerGlobalScope) {
    const receive = createFeed(function (msg) { scope.postMessage(msg); });
    scope.addEventListener('message', function (e) { receive(e.data); });
  } else {
    (scope.rigtel = scope.rigtel || {}).createFeed = createFeed;
  }
})(self);
