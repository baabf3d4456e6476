// quotes dashboard: the browser's own WebSocket against /ws/quotes, no framework, no build.
// When the WebSocket cannot open at all (a proxy that breaks the upgrade) and the server is
// up, it falls back to the same stream over Server-Sent Events (/sse/quotes, EventSource)
// and stays there; ?transport=sse asks for SSE from the start. The header says which.
// Incoming quotes are queued by onmessage and applied once per animation frame; only rows
// that changed are touched. window.dashboard exposes the state for tests and measurements.
"use strict";
(() => {
  const SPARK_POINTS = 60;        // recent prices kept per ticker
  const SPARK_EVERY_MS = 250;     // a row's sparkline is redrawn at most this often
  const ROW_EVERY_MS = 100;       // a row's cells are rewritten at most this often
  const FLASH_MS = 600;
  const HEALTHY_MS = 10000;       // connected this long: the backoff starts again at 1 s
  const SET_TIMEOUT_MS = 2000;    // no "subscribed" reply by then: reconnect instead
  const TOKEN_KEY = "quotes.token";

  const $ = (id) => document.getElementById(id);
  const el = {
    state: $("state"), rate: $("rate"), latency: $("latency"), count: $("count"),
    rows: $("rows"), form: $("controls"), tickers: $("tickers"), token: $("token"),
    message: $("message"), demo: $("demo"),
  };

  // ---- latency: per-second histograms over the last minute -------------------------------
  // bins: 1 ms up to 1 s, 10 ms up to 11 s, then one overflow bin
  const BINS = 2001;
  const binOf = (ms) => ms < 0 ? 0 : ms < 1000 ? Math.floor(ms)
    : ms < 11000 ? 1000 + Math.floor((ms - 1000) / 10) : BINS - 1;
  const msOf = (bin) => bin < 1000 ? bin : 1000 + (bin - 1000) * 10;
  const seconds = [];  // [{sec, hist: Uint32Array, n}]
  function latencyBucket(nowSec) {
    let last = seconds[seconds.length - 1];
    if (!last || last.sec !== nowSec) {
      last = { sec: nowSec, hist: new Uint32Array(BINS), n: 0 };
      seconds.push(last);
      while (seconds.length && seconds[0].sec <= nowSec - 60) seconds.shift();
    }
    return last;
  }
  function percentiles(qs) {
    const total = seconds.reduce((a, s) => a + s.n, 0);
    if (!total) return null;
    const out = [];
    for (const q of qs) {
      const want = Math.max(1, Math.ceil(q * total));
      let seen = 0;
      for (let b = 0; b < BINS; b++) {
        for (const s of seconds) seen += s.hist[b];
        if (seen >= want) { out.push(msOf(b)); break; }
      }
    }
    return out;
  }

  // ---- state ---------------------------------------------------------------------------
  const stats = {
    renders: 0, received: 0, applied: 0, rowsPainted: 0, opens: 0, closes: [],
    liveSets: 0, setFallbacks: 0,  // "set" answered on the open socket / refused: reconnected
    ratePerSec: 0, lastP50: null, lastP99: null,
    latencySamples: 0,  // quotes counted in the latency percentiles
    stale: 0,           // snapshot quotes (published before we subscribed): not latency
    sseOpens: 0,        // SSE streams opened (the browser's own reconnects too)
    recovered: 0, unrecovered: 0,  // SSE resumes (Last-Event-ID) the server could, could not replay
  };
  const rows = new Map();  // ticker -> row
  let pending = [];
  let frameRequested = false;
  let selected = null;     // null: all tickers; else a Set of upper-case symbols
  let ws = null;
  let es = null;           // the EventSource, over SSE
  // "websocket", or "sse" once an EventSource has opened (or ?transport=sse)
  let transport = new URLSearchParams(location.search).get("transport") === "sse"
    ? "sse" : "websocket";
  let attempt = 0;
  let retryAt = 0;
  let retryTimer = 0;
  let openedAt = 0;
  // quotes published before this moment (the snapshot sent on open and after a "set")
  // measure how old a price is, not how long delivery took: they stay out of the latency
  let liveSince = 0;
  let wantSet = null;      // {sock, timer} while a live "set" waits for its reply
  let lastSecond = Math.floor(Date.now() / 1000);
  let countThisSecond = 0;
  let phase = "connecting";

  function parseTickers(text) {
    const parts = text.split(",").map((s) => s.trim().toUpperCase()).filter(Boolean);
    if (!parts.length || parts.includes("*")) return null;
    return new Set(parts);
  }
  const tickerParam = () => selected ? [...selected].sort().join(",") : "*";

  function streamParams() {
    // mode=latest: a tab that falls behind gets the newest price per ticker, not a backlog
    const params = new URLSearchParams({ tickers: tickerParam(), mode: "latest", snapshot: "1" });
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) params.set("access_token", token);
    return params;
  }
  function wsUrl() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return `${proto}//${location.host}/ws/quotes?${streamParams()}`;
  }
  const sseUrl = () => `/sse/quotes?${streamParams()}`;
  const transportName = () => transport === "sse" ? "SSE" : "WebSocket";

  function setState(name, text) {
    phase = name;
    el.state.className = `state state-${name}`;
    el.state.textContent = text;
  }
  function say(text, error = false) {
    el.message.textContent = text;
    el.message.className = error ? "error" : "";
  }

  // ---- connection ----------------------------------------------------------------------
  function connect() {
    clearTimeout(retryTimer);
    retryAt = 0;
    if (transport === "sse") { connectSse(false); return; }
    setState("connecting", "connecting…");
    let opened = false;
    const sock = new WebSocket(wsUrl());
    ws = sock;
    liveSince = Date.now();
    sock.onopen = () => {
      if (ws !== sock) return;
      opened = true;
      openedAt = Date.now();
      stats.opens += 1;
      setState("open", "live · WebSocket");
      say("");
    };
    sock.onmessage = (event) => {
      if (ws !== sock) return;
      onText(event.data);
    };
    sock.onclose = (event) => {
      if (ws !== sock) return;
      ws = null;
      stats.closes.push(event.code);
      dropSet();
      if (!opened && stats.opens === 0 && typeof EventSource === "function") {
        // never open on this page: perhaps a proxy breaks the upgrade; try plain HTTP
        connectSse(true);
        return;
      }
      if (opened && Date.now() - openedAt >= HEALTHY_MS) attempt = 0;
      const delay = nextDelay();
      if (!opened) {
        diagnose();
      } else {
        say(`closed ${event.code}${event.reason ? ": " + event.reason : ""}`, event.code !== 1000);
      }
      scheduleRetry(delay);
    };
  }

  function onText(text) {
    let data;
    try { data = JSON.parse(text); } catch { return; }
    if (Array.isArray(data)) {  // batch=1 frames
      for (const item of data) accept(item);
    } else {
      accept(data);
    }
    if (!frameRequested) { frameRequested = true; requestAnimationFrame(frame); }
  }

  // The stream over Server-Sent Events. The browser reconnects by itself when a stream
  // ends (the server's "error" event says why), sending Last-Event-ID: the server resumes.
  // A refusal (any status but 200) ends the EventSource for good: then back to the
  // WebSocket's diagnosis and backoff. `trial`: the WebSocket never opened; SSE is tried.
  function connectSse(trial) {
    setState("connecting", trial ? "WebSocket blocked? trying SSE…" : "connecting (SSE)…");
    let opened = false;
    const src = new EventSource(sseUrl());
    es = src;
    liveSince = Date.now();
    src.onopen = () => {
      if (es !== src) return;
      opened = true;
      transport = "sse";
      openedAt = Date.now();
      stats.opens += 1;
      stats.sseOpens += 1;
      setState("open", "live · SSE");
      say("");
    };
    src.onmessage = (event) => {
      if (es !== src) return;
      onText(event.data);
    };
    src.addEventListener("recovered", (event) => {
      let msg = {};
      try { msg = JSON.parse(event.data); } catch { /* not ours */ }
      if (msg.recovered === true) stats.recovered += 1; else stats.unrecovered += 1;
    });
    src.addEventListener("error", (event) => {
      if (es !== src) return;
      if (event.data) {  // the server's closing event: the browser reconnects after retry:
        let msg = {};
        try { msg = JSON.parse(event.data); } catch { /* not ours */ }
        stats.closes.push(msg.close_code ?? 0);
        say(`closed ${msg.close_code}: ${msg.message || msg.code}`, msg.close_code !== 1000);
        return;
      }
      if (src.readyState !== EventSource.CLOSED) {
        setState("connecting", "reconnecting (SSE)…");
        return;
      }
      es = null;
      if (opened && Date.now() - openedAt >= HEALTHY_MS) attempt = 0;
      if (trial && !opened) transport = "websocket";
      diagnose();
      scheduleRetry(nextDelay());
    });
  }

  function closeStream() {
    if (ws) { const old = ws; ws = null; old.close(1000); }
    if (es) { const old = es; es = null; old.close(); }
  }

  function nextDelay() {
    // 1, 2, 4 … 60 s; jitter only shortens a delay (uniform in [d/2, d])
    const base = Math.min(60, 2 ** attempt);
    attempt += 1;
    return (base / 2 + Math.random() * base / 2) * 1000;
  }

  function scheduleRetry(delayMs) {
    retryAt = Date.now() + delayMs;
    tickCountdown();
    retryTimer = setTimeout(connect, delayMs);
  }

  function tickCountdown() {
    if (!retryAt) return;
    const left = Math.max(0, (retryAt - Date.now()) / 1000);
    const kind = phase === "rejected" ? "rejected" : "closed";
    setState(kind, `${kind === "rejected" ? "rejected" : "disconnected"}, retry in ${left.toFixed(0)} s`);
  }

  // The browser reports only 1006 for a refused handshake; /ready tells an upstream
  // outage (503) apart from a refusal of this page (origin or token). A server with an
  // internal port (or a proxy) answers /ready with 404: then it cannot tell.
  function diagnose() {
    phase = "rejected";
    say("handshake failed: rejected (origin/auth?)", true);
    fetch("/ready", { cache: "no-store" }).then((r) => {
      if (r.status === 404) {
        say("handshake failed: rejected (origin/auth?) or server unavailable", true);
      } else if (!r.ok) {
        phase = "closed";
        say(`handshake failed: server unavailable (/ready ${r.status})`, true);
      }
    }).catch(() => {
      phase = "closed";
      say("handshake failed: server unreachable", true);
    }).finally(tickCountdown);
  }

  function accept(msg) {
    if (msg === null || typeof msg !== "object") return;
    if ("event" in msg && !("ticker" in msg)) { control(msg); return; }
    if (typeof msg.ticker !== "string" || typeof msg.close !== "number") return;
    stats.received += 1;
    countThisSecond += 1;
    // latency on arrival, not at paint time: a busy frame must not look like a slow network
    const nowMs = Date.now();
    const published = Date.parse(msg.timestamp);
    const lat = nowMs - published;
    if (published < liveSince) {
      stats.stale += 1;
    } else if (Number.isFinite(lat)) {
      const bucket = latencyBucket(Math.floor(nowMs / 1000));
      bucket.hist[binOf(lat)] += 1;
      bucket.n += 1;
      stats.latencySamples += 1;
    }
    pending.push(msg);
  }

  // control frames ({"event": ...}) are never rows
  function control(msg) {
    if (msg.event === "subscribed" && wantSet) {
      clearTimeout(wantSet.timer);
      wantSet = null;
      stats.liveSets += 1;
      say(`subscribed: ${Array.isArray(msg.tickers) ? msg.tickers.join(",") : msg.tickers}`);
    } else if (msg.event === "error") {
      say(`server: ${msg.message || msg.code}`, true);
      // the live "set" was refused: reconnect with the new ?tickers= instead
      if (wantSet) { const sock = wantSet.sock; dropSet(); reconnectNow(sock); }
    }
  }

  function dropSet() {
    if (wantSet) { clearTimeout(wantSet.timer); wantSet = null; }
  }

  function reconnectNow(sock) {
    if (ws !== sock) return;
    stats.setFallbacks += 1;
    ws = null;
    sock.close(1000);
    attempt = 0;
    connect();
  }

  function applySelection(text) {
    selected = parseTickers(text);
    for (const [ticker, row] of rows) {
      if (selected && !selected.has(ticker)) { visibility.unobserve(row.tr); row.tr.remove(); rows.delete(ticker); }
    }
    el.count.textContent = String(rows.size);
    const url = new URL(location.href);
    url.searchParams.set("tickers", tickerParam());
    history.replaceState(null, "", url);
    dropSet();  // only the newest choice counts
    if (ws && ws.readyState === WebSocket.OPEN) {
      // live re-subscription on the open socket (with snapshot=1 the server sends the
      // new tickers' latest quotes right after its "subscribed" reply)
      const tickers = selected ? [...selected].sort() : ["*"];
      liveSince = Date.now();
      ws.send(JSON.stringify({ action: "set", tickers }));
      const sock = ws;
      wantSet = {
        sock,
        timer: setTimeout(() => {  // a server without live re-subscription: reconnect
          wantSet = null;
          reconnectNow(sock);
        }, SET_TIMEOUT_MS),
      };
    } else {
      // no socket to re-subscribe on, or SSE (one-way): a new stream with the new query
      attempt = 0;
      closeStream();
      connect();
    }
  }

  // ---- rendering -----------------------------------------------------------------------
  function makeRow(ticker) {
    const tr = document.createElement("div");
    tr.className = "row";
    tr.setAttribute("role", "row");
    const cells = {};
    for (const name of ["ticker", "last", "change", "pct", "bid", "ask", "volume", "time"]) {
      const td = document.createElement("span");
      td.className = name;
      td.setAttribute("role", "cell");
      tr.appendChild(td);
      cells[name] = td;
    }
    cells.ticker.textContent = ticker;
    const td = document.createElement("span");
    td.setAttribute("role", "cell");
    const canvas = document.createElement("canvas");
    canvas.className = "spark";
    canvas.width = 120; canvas.height = 24;
    td.appendChild(canvas);
    tr.appendChild(td);
    tr.dataset.ticker = ticker;
    const row = {
      ticker, tr, cells, canvas, first: null, last: null, prev: null, bid: null, ask: null,
      volume: 0, timestamp: "", history: new Float64Array(SPARK_POINTS), n: 0, head: 0,
      paintedAt: 0, sparkAt: 0, flashUntil: 0, visible: true, stale: false,
    };
    // keep the table sorted by ticker
    let before = null;
    for (const other of el.rows.children) {
      if (other.dataset.ticker > ticker) { before = other; break; }
    }
    el.rows.insertBefore(tr, before);
    rows.set(ticker, row);
    tr.quotesRow = row;
    visibility.observe(tr);
    el.count.textContent = String(rows.size);
    return row;
  }

  // rows scrolled out of view are not rewritten; they catch up when they come back
  const visibility = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const row = entry.target.quotesRow;
      row.visible = entry.isIntersecting;
      if (row.visible && row.stale) {
        row.stale = false;
        dirty.add(row);
        sparkDue.add(row);
        if (!frameRequested) { frameRequested = true; requestAnimationFrame(frame); }
      }
    }
  });

  const dirty = new Set();
  const flashing = new Set();
  const sparkDue = new Set();  // rows whose sparkline is out of date

  function apply(q, nowMs) {
    if (selected && !selected.has(q.ticker)) return;
    const row = rows.get(q.ticker) || makeRow(q.ticker);
    if (row.first === null) row.first = q.close;
    row.prev = row.last;
    row.last = q.close;
    row.bid = q.bid ?? null;
    row.ask = q.ask ?? null;
    row.volume = q.volume;
    row.timestamp = q.timestamp;
    row.history[row.head] = q.close;
    row.head = (row.head + 1) % SPARK_POINTS;
    row.n = Math.min(SPARK_POINTS, row.n + 1);
    dirty.add(row);
    stats.applied += 1;
  }

  const fmt = (x) => x === null || x === undefined ? "–" : x.toFixed(x >= 1000 ? 2 : x >= 1 ? 2 : 4);

  function paint(row, nowMs) {
    const c = row.cells;
    const change = row.last - row.first;
    const sign = change > 0 ? "up" : change < 0 ? "down" : "";
    c.last.textContent = fmt(row.last);
    c.change.textContent = (change > 0 ? "+" : "") + change.toFixed(2);
    c.pct.textContent = (change > 0 ? "+" : "") + (row.first ? change / row.first * 100 : 0).toFixed(2) + "%";
    c.change.className = `change ${sign}`;
    c.pct.className = `pct ${sign}`;
    c.bid.textContent = fmt(row.bid);
    c.ask.textContent = fmt(row.ask);
    c.volume.textContent = String(row.volume).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    c.time.textContent = row.timestamp.slice(11, 23);
    if (row.prev !== null && row.prev !== row.last) {
      row.tr.classList.toggle("flash-up", row.last > row.prev);
      row.tr.classList.toggle("flash-down", row.last < row.prev);
      row.flashUntil = nowMs + FLASH_MS;
      flashing.add(row);
    }
    sparkDue.add(row);
    stats.rowsPainted += 1;
  }

  function drawSpark(row) {
    const ctx = row.canvas.getContext("2d");
    const w = row.canvas.width, h = row.canvas.height;
    ctx.clearRect(0, 0, w, h);
    if (row.n < 2) return;
    let lo = Infinity, hi = -Infinity;
    const start = (row.head - row.n + SPARK_POINTS) % SPARK_POINTS;
    for (let i = 0; i < row.n; i++) {
      const v = row.history[(start + i) % SPARK_POINTS];
      if (v < lo) lo = v; if (v > hi) hi = v;
    }
    const span = hi - lo || 1;
    ctx.beginPath();
    for (let i = 0; i < row.n; i++) {
      const v = row.history[(start + i) % SPARK_POINTS];
      const x = (i / (row.n - 1)) * (w - 2) + 1;
      const y = h - 2 - ((v - lo) / span) * (h - 4);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    }
    ctx.strokeStyle = row.last >= row.first ? "#2fbf71" : "#e5484d";
    ctx.lineWidth = 1.2;
    ctx.stroke();
  }

  function frame() {
    frameRequested = false;
    const nowMs = Date.now();
    const batch = pending;
    pending = [];
    for (const q of batch) apply(q, nowMs);
    const todo = [...dirty];
    dirty.clear();
    for (const row of todo) {
      if (rows.get(row.ticker) !== row) continue;
      if (!row.visible) { row.stale = true; continue; }
      // a row repaints at most every ROW_EVERY_MS; later changes wait for a later frame
      if (nowMs - row.paintedAt >= ROW_EVERY_MS) { row.paintedAt = nowMs; paint(row, nowMs); }
      else dirty.add(row);
    }
    for (const row of sparkDue) {
      if (nowMs - row.sparkAt >= SPARK_EVERY_MS) {
        sparkDue.delete(row);
        row.sparkAt = nowMs;
        if (rows.get(row.ticker) !== row) continue;
        if (row.visible) drawSpark(row); else row.stale = true;
      }
    }
    for (const row of flashing) {
      if (row.flashUntil <= nowMs) {
        row.tr.classList.remove("flash-up", "flash-down");
        flashing.delete(row);
      }
    }
    stats.renders += 1;
    if ((dirty.size || flashing.size || sparkDue.size) && !frameRequested) {
      frameRequested = true;
      requestAnimationFrame(frame);
    }
  }

  // once a second: quotes/s, latency percentiles, the countdown
  setInterval(() => {
    const sec = Math.floor(Date.now() / 1000);
    if (sec !== lastSecond) {
      stats.ratePerSec = countThisSecond / Math.max(1, sec - lastSecond);
      countThisSecond = 0;
      lastSecond = sec;
      el.rate.textContent = stats.ratePerSec.toFixed(0);
      while (seconds.length && seconds[0].sec <= sec - 60) seconds.shift();
      const p = percentiles([0.5, 0.99]);
      if (p) {
        [stats.lastP50, stats.lastP99] = p;
        el.latency.textContent = `${p[0]} / ${p[1]} ms`;
      }
    }
    tickCountdown();
  }, 250);

  // ---- controls ------------------------------------------------------------------------
  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = el.token.value.trim();
    const hadToken = sessionStorage.getItem(TOKEN_KEY) || "";
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    if (token !== hadToken) closeStream();
    applySelection(el.tickers.value);
  });

  const initial = new URLSearchParams(location.search).get("tickers") || "";
  el.tickers.value = initial === "*" ? "" : initial;
  el.token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  selected = parseTickers(initial);

  // /info says whether the server streams the demo feed: then a banner says the prices
  // are synthetic. A server without /info (404) or an error shows no banner.
  let info = null;
  fetch("/info", { cache: "no-store" })
    .then((r) => (r.ok ? r.json() : {}))
    .catch(() => ({}))
    .then((body) => {
      info = body;
      el.demo.hidden = body.demo !== true;
    });

  window.dashboard = {
    stats, rows, state: () => phase, stateText: () => el.state.textContent, info: () => info,
    transport: () => transport,
  };
  connect();
})();
