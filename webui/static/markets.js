// CryptoPulse markets overview: one WebSocket, {"type": "overview"} once (and each minute, as the 24 h window
// slides); the `overview` message fills the table, every coin's live ticks move it.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const rows = new Map([...document.querySelectorAll("#markets tbody tr")].map((tr) => [tr.dataset.symbol, tr]));
  const state = { coins: new Map(), sort: { key: null, dir: 1 }, socket: null, attempts: 0, lost: null, feedDown: null,
                  refreshTimer: null };

  const digits = (p) => (p >= 1000 ? 2 : p >= 1 ? 4 : 6);
  const money = (v, ref) => {
    if (v == null) return "—";
    const d = digits(Math.abs(ref ?? v));
    return "$" + v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  };
  const compact = (v) => (v == null ? "—" : "$" + Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 2 }).format(v));
  const signed = (v, text) => (v == null ? "—" : (v > 0 ? "+" : v < 0 ? "−" : "") + text);
  const age = (ts) => {
    if (!ts) return "—";
    const s = Math.max(0, (Date.now() - ts) / 1000);
    return s < 90 ? `${s.toFixed(0)} s` : s < 5400 ? `${(s / 60).toFixed(0)} min` : s < 172800 ? `${(s / 3600).toFixed(1)} h` : `${(s / 86400).toFixed(0)} d`;
  };

  function cell(tr, cls, text, value) {
    const td = tr.querySelector("." + cls);
    td.textContent = text;
    if (value !== undefined) td.dataset.value = value ?? "";
    return td;
  }

  function spark(tr, coin) {
    const points = coin.spark || [];
    const line = tr.querySelector(".spark polyline"), svg = tr.querySelector(".spark");
    if (points.length < 2) { line.setAttribute("points", ""); return; }
    const values = points.map((p) => p[1]);
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    const t0 = points[0][0], t1 = points[points.length - 1][0], width = t1 - t0 || 1;
    line.setAttribute("points", points.map(([t, v]) => `${(((t - t0) / width) * 100).toFixed(2)},${(26 - ((v - lo) / span) * 24).toFixed(2)}`).join(" "));
    svg.classList.toggle("down", values[values.length - 1] < values[0]);
    svg.dataset.points = String(points.length);
  }

  function render(symbol) {
    const coin = state.coins.get(symbol), tr = rows.get(symbol);
    if (!coin || !tr) return;
    cell(tr, "price", money(coin.price), coin.price);
    const direction = coin.change > 0 ? "up" : coin.change < 0 ? "down" : "";
    cell(tr, "change", signed(coin.change, money(Math.abs(coin.change ?? 0), coin.price)), coin.change).className = `num opt change ${direction}`;
    cell(tr, "pct", signed(coin.change_pct, `${Math.abs(coin.change_pct ?? 0).toFixed(2)}%`), coin.change_pct).className = `num pct ${direction}`;
    cell(tr, "volume", compact(coin.volume), coin.volume);
    cell(tr, "high", money(coin.high, coin.price), coin.high);
    cell(tr, "low", money(coin.low, coin.price), coin.low);
    cell(tr, "source", coin.source ?? "no data", coin.source ?? "");
    cell(tr, "age", age(coin.last_update), coin.last_update);
    spark(tr, coin);
  }

  function sortRows() {
    const { key, dir } = state.sort;
    for (const th of document.querySelectorAll("#markets th[data-sort]")) {
      th.setAttribute("aria-sort", th.dataset.sort === key ? (dir > 0 ? "ascending" : "descending") : "none");
    }
    if (!key) return;
    const value = (symbol) => (key === "symbol" ? symbol : state.coins.get(symbol)?.[key]);
    const order = [...rows.keys()].sort((a, b) => {
      const x = value(a), y = value(b);
      if (x == null || y == null) return x == null ? (y == null ? 0 : 1) : -1; // no data last, either way
      return (typeof x === "string" ? x.localeCompare(y) : x - y) * dir;
    });
    const body = document.querySelector("#markets tbody");
    for (const symbol of order) body.appendChild(rows.get(symbol));
  }

  function onOverview(msg) {
    for (const coin of msg.coins) { state.coins.set(coin.symbol, coin); render(coin.symbol); }
    $("sim-badge").hidden = !msg.coins.some((c) => c.simulated);
    sortRows();
    state.lost = null; renderBanner();
    document.body.dataset.overviews = String(Number(document.body.dataset.overviews || 0) + 1);
    document.body.dataset.serverMs = String(msg.server_ms ?? "");
  }

  function onTick(t) {
    const coin = state.coins.get(t.symbol);
    if (!coin || (coin.source && t.source !== coin.source) || (coin.last_update && t.ts <= coin.last_update)) return;
    const moved = coin.price == null || t.price === coin.price ? "" : t.price > coin.price ? "rise" : "fall";
    coin.source = t.source; coin.price = t.price; coin.last_update = t.ts;
    if (coin.first == null) coin.first = t.price;
    coin.change = t.price - coin.first;
    coin.change_pct = coin.first ? (coin.change / coin.first) * 100 : null;
    coin.high = coin.high == null ? t.price : Math.max(coin.high, t.price);
    coin.low = coin.low == null ? t.price : Math.min(coin.low, t.price);
    const spark = coin.spark || (coin.spark = []), bucket = coin.spark_ms || 1800000;
    const start = t.ts - (t.ts % bucket), last = spark[spark.length - 1];
    if (last && last[0] === start) last[1] = t.price;
    else if (!last || start > last[0]) { spark.push([start, t.price]); while (spark.length > 48) spark.shift(); }
    render(t.symbol);
    const price = rows.get(t.symbol).querySelector("td.price");
    price.classList.remove("rise", "fall"); void price.offsetWidth; // restart the animation
    if (moved) price.classList.add(moved);
    document.body.dataset.ticks = String(Number(document.body.dataset.ticks || 0) + 1);
    if (state.feedDown) onStatus({ live: true });
  }

  function setStatus(text, cls) { const el = $("status"); el.textContent = text; el.className = "status " + cls; }

  function renderBanner() {
    const reason = state.lost || state.feedDown;
    $("stale").hidden = !reason;
    $("stale-reason").textContent = reason || "";
    document.body.classList.toggle("is-stale", Boolean(reason));
  }

  function onStatus(msg) {
    state.feedDown = msg.live ? null : (msg.message || "live feed interrupted");
    if (state.socket && state.socket.readyState === WebSocket.OPEN) setStatus(msg.live ? "live" : "stale", msg.live ? "live" : "reconnecting");
    renderBanner();
  }

  function ask() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(ask, 60000); // the 24 h window slides: a fresh overview each minute
    if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify({ type: "overview" }));
  }

  function connect() {
    const sock = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
    state.socket = sock;
    sock.onopen = () => { state.attempts = 0; state.feedDown = null; setStatus("live", "live"); ask(); };
    sock.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "overview") onOverview(msg);
      else if (msg.type === "tick") onTick(msg);
      else if (msg.type === "ticks") msg.ticks.forEach(onTick);
      else if (msg.type === "status") onStatus(msg);
      else if (msg.type === "alert") window.cryptoPulseAlerts?.receive(msg); // webui/static/alerts.js
      else if (msg.type === "error") {
        console.warn("server:", msg.message);
        if (msg.retry_ms != null) { clearTimeout(state.refreshTimer); state.refreshTimer = setTimeout(ask, msg.retry_ms); }
      }
    };
    sock.onclose = () => {
      if (state.socket !== sock) return;
      const delay = Math.min(30000, 500 * 2 ** state.attempts) * (0.8 + Math.random() * 0.4);
      state.attempts += 1;
      setStatus(`reconnecting… (${(delay / 1000).toFixed(1)} s)`, "reconnecting");
      state.lost = `connection to the server lost, reconnecting in ${(delay / 1000).toFixed(1)} s`;
      renderBanner();
      setTimeout(connect, delay);
    };
  }

  document.querySelector("#markets thead").addEventListener("click", (e) => {
    const key = e.target.closest("th")?.dataset.sort; if (!key) return;
    state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : (key === "symbol" || key === "source" ? 1 : -1) };
    sortRows();
  });
  document.querySelector("#markets tbody").addEventListener("click", (e) => {
    const tr = e.target.closest("tr"); if (!tr || e.target.closest("a")) return;
    location.href = tr.querySelector("a").href; // the whole row is one click to the coin's chart
  });
  setInterval(() => { for (const [symbol, tr] of rows) cell(tr, "age", age(state.coins.get(symbol)?.last_update)); }, 1000);
  window.markets = { state };
  connect();
})();
