// CryptoPulse dashboard: one WebSocket, subscribe {symbol, range}; snapshot fills the charts, ticks update them.
"use strict";
(() => {
  const LWC = window.LightweightCharts;
  const clock = window.cryptoPulseClock; // webui/static/clock.js
  const DAY_MS = 86400000;
  const $ = (id) => document.getElementById(id);
  const state = {
    symbol: document.body.dataset.symbols.split(",")[0], range: "1h", kind: "line",
    snapshot: null, stats: null, bars: new Map(), lastLine: 0, lastCandle: null, attempts: 0, socket: null,
    // Why the chart may be behind, shown by the "stale / reconnecting" banner until data flows again:
    lost: null,        // the socket closed: until the snapshot after reconnecting
    feedDown: null,    // the server's live feed is interrupted (a `status` message): until it says live or a tick comes
    historyDown: null, // the server could not read history: until a snapshot arrives (asked again after retry_ms)
    retryTimer: null,
    indicators: new Set(), // the indicators shown on this coin's chart (remembered per coin in localStorage)
    refreshTimer: null,    // while indicators are shown, a fresh snapshot each minute keeps them current
    refreshing: false,     // the snapshot asked for is such a refresh: the chart keeps its zoom
  };

  // A time-axis mark between two whole minutes gets its seconds: where the points are seconds apart (the 1 h range,
  // or any range holding only a few minutes of ticks) the axis puts several marks in a minute, which the library wrote
  // as "18:53", like the minute's own mark, three times in a row. Every other mark keeps the library's label (null):
  // minutes as 18:53, days, months, years. (secondsVisible would also add ":00" to every minute's mark.)
  const axisLabel = (time, type) =>
    (type === LWC.TickMarkType.Time && typeof time === "number" && time % 60 !== 0 ? clock.utcTime(time * 1000) : null);

  const chart = LWC.createChart($("chart"), {
    autoSize: true,
    layout: { background: { color: "transparent" }, textColor: "#8a94a8", attributionLogo: false },
    grid: { vertLines: { color: "#1f2738" }, horzLines: { color: "#1f2738" } },
    timeScale: { timeVisible: true, secondsVisible: false, tickMarkFormatter: axisLabel, borderColor: "#2a3550" },
    rightPriceScale: { borderColor: "#2a3550" },
    crosshair: { mode: LWC.CrosshairMode.Normal },
  });
  const line = chart.addSeries(LWC.AreaSeries, {
    lineColor: "#4c8dff", topColor: "rgba(76,141,255,.35)", bottomColor: "rgba(76,141,255,0)", lineWidth: 2,
  });
  const candles = chart.addSeries(LWC.CandlestickSeries, {
    upColor: "#26a69a", downColor: "#ef5350", borderVisible: false, wickUpColor: "#26a69a", wickDownColor: "#ef5350",
    visible: false,
  });
  const volume = chart.addSeries(LWC.HistogramSeries, {
    priceFormat: { type: "volume" }, priceScaleId: "vol", color: "rgba(138,148,168,.35)", lastValueVisible: false,
    priceLineVisible: false,
  });
  chart.priceScale("vol").applyOptions({ scaleMargins: { top: 0.82, bottom: 0 } });

  // Indicators (computed by the server over the chart's own candles, the `indicators` message): overlays on the
  // price scale, RSI in a pane of its own under the chart.
  const OVERLAYS = { sma20: "#f0b90b", sma50: "#e67e22", ema20: "#9b59b6", ema50: "#e84393", vwap: "#00bcd4" };
  const overlays = Object.fromEntries(Object.entries(OVERLAYS).map(([name, color]) => [name, chart.addSeries(LWC.LineSeries, {
    color, lineWidth: 1, lastValueVisible: false, priceLineVisible: false, crosshairMarkerVisible: false, visible: false,
    title: name.toUpperCase(),
  })]));
  let rsiSeries = null;
  const STORE_KEY = "cryptopulse.indicators";
  const remembered = () => { try { return JSON.parse(localStorage.getItem(STORE_KEY)) || {}; } catch { return {}; } };
  function remember() {
    const all = remembered(); all[state.symbol] = [...state.indicators];
    try { localStorage.setItem(STORE_KEY, JSON.stringify(all)); } catch { /* private mode: not remembered */ }
  }
  chart.priceScale("right").applyOptions({ scaleMargins: { top: 0.08, bottom: 0.22 } });

  const sec = (ms) => Math.floor(ms / 1000);
  const digits = (p) => (p >= 1000 ? 2 : p >= 1 ? 4 : 6);
  // Decimals follow the coin's price, not the number shown: a $3,000 coin's change of $18 reads "$18.00".
  const money = (v, ref) => {
    if (v == null) return "—";
    const d = digits(Math.abs(ref ?? state.stats?.price ?? v));
    return "$" + v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  };
  const compact = (v) => (v == null ? "—" : "$" + Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 2 }).format(v));
  const setText = (id, text, value) => { const el = $(id); el.textContent = text; if (value !== undefined) el.dataset.value = value ?? ""; };

  // Tooltip: the values under the crosshair.
  chart.subscribeCrosshairMove((param) => {
    const tip = $("tooltip");
    if (!param.time || !param.seriesData) { tip.hidden = true; return; }
    const c = param.seriesData.get(candles), l = param.seriesData.get(line), v = param.seriesData.get(volume);
    const when = clock.dateTime(param.time * 1000);
    let text = when;
    if (state.kind === "candles" && c) text += `  O ${money(c.open)} H ${money(c.high)} L ${money(c.low)} C ${money(c.close)}`;
    else if (l) text += `  ${money(l.value)}`;
    if (v) text += `  vol ${compact(v.value)}`;
    tip.textContent = text; tip.hidden = false;
  });

  function renderStats() {
    const s = state.stats, snap = state.snapshot;
    if (!s || !snap) return;
    setText("p-symbol", `${snap.symbol} / USD`);
    $("p-badge").hidden = !snap.simulated;
    setText("p-price", money(s.price), s.price);
    const ch = $("p-change");
    ch.className = "change " + (s.change > 0 ? "up" : s.change < 0 ? "down" : "");
    ch.textContent = s.change == null ? "—" : `${s.change >= 0 ? "+" : "−"}${money(Math.abs(s.change))} (${s.change_pct >= 0 ? "+" : ""}${(s.change_pct ?? 0).toFixed(2)}%)`;
    ch.dataset.value = s.change ?? ""; ch.dataset.pct = s.change_pct ?? "";
    setText("p-range", `${snap.range} · ${snap.basis === "candles_1m" ? "1m candles" : "ticks"}`);
    setText("p-min", money(s.min), s.min);
    setText("p-max", money(s.max), s.max);
    setText("p-volume", compact(s.volume), s.volume);
    setText("p-updated", s.last_update ? clock.time(s.last_update) : "—", s.last_update);
    setText("p-source", snap.source ?? "no data", snap.source ?? "");
    renderAge();
  }

  function renderAge() {
    const s = state.stats;
    if (!s || !s.last_update) { setText("p-age", "—"); return; }
    const age = Math.max(0, (Date.now() - s.last_update) / 1000);
    setText("p-age", age < 90 ? `${age.toFixed(0)} s` : age < 5400 ? `${(age / 60).toFixed(0)} min` : `${(age / 3600).toFixed(1)} h`);
  }
  setInterval(renderAge, 1000);

  function onIndicators(msg) {
    if (msg.symbol !== state.symbol || msg.range !== state.range) return;
    state.indicatorData = msg.series;
    showIndicators();
  }

  function showIndicators() {
    const data = state.indicatorData || {};
    const points = (name) => (data[name] || []).map(([t, v]) => ({ time: sec(t), value: v }));
    for (const [name, series] of Object.entries(overlays)) {
      const on = state.indicators.has(name);
      series.applyOptions({ visible: on });
      series.setData(on ? points(name) : []);
    }
    if (state.indicators.has("rsi14")) {
      if (!rsiSeries) {
        rsiSeries = chart.addSeries(LWC.LineSeries, { color: "#b388ff", lineWidth: 1, priceLineVisible: false, title: "RSI 14",
          autoscaleInfoProvider: () => ({ priceRange: { minValue: 0, maxValue: 100 } }) }, 1);
        for (const level of [30, 70]) rsiSeries.createPriceLine({ price: level, color: "#5a6478", lineWidth: 1, lineStyle: 2, axisLabelVisible: false });
        chart.panes()[1]?.setStretchFactor(0.25);
      }
      rsiSeries.setData(points("rsi14"));
    } else if (rsiSeries) {
      chart.removeSeries(rsiSeries); rsiSeries = null;
    }
    for (const b of document.querySelectorAll("#indicators button")) b.classList.toggle("active", state.indicators.has(b.dataset.indicator));
    document.body.dataset.indicators = [...state.indicators].join(",");
  }

  function onSnapshot(snap) {
    if (snap.symbol !== state.symbol || snap.range !== state.range) return; // an answer to an older request
    state.snapshot = snap;
    state.stats = { ...snap.stats };
    line.setData(snap.line.map(([t, v]) => ({ time: sec(t), value: v })));
    candles.setData(snap.candles.map(([t, o, h, l, c]) => ({ time: sec(t), open: o, high: h, low: l, close: c })));
    volume.setData(snap.volume.map(([t, v], i) => ({ time: sec(t), value: v, color: barColor(snap.candles[i]) })));
    state.bars = new Map(snap.volume.map(([t, v]) => [t, v]));
    state.lastLine = snap.line.length ? snap.line[snap.line.length - 1][0] : 0;
    const last = snap.candles[snap.candles.length - 1];
    state.lastCandle = last ? { start: last[0], open: last[1], high: last[2], low: last[3], close: last[4] } : null;
    if (!state.refreshing) chart.timeScale().fitContent();
    state.refreshing = false;
    document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots || 0) + 1);
    state.lost = null; state.historyDown = null; clearTimeout(state.retryTimer);
    renderStats(); renderBanner();
  }

  function barColor(c) {
    return c && c[4] < c[1] ? "rgba(239,83,80,.35)" : "rgba(38,166,154,.35)";
  }

  function onTick(t) {
    const snap = state.snapshot, s = state.stats;
    if (!snap || t.symbol !== state.symbol || t.source !== (snap.source ?? t.source)) return;
    const second = t.ts - (t.ts % 1000);
    if (second < state.lastLine) return; // older than the chart's last point: the chart only grows to the right
    line.update({ time: sec(second), value: t.price });
    state.lastLine = second;
    const start = t.ts - (t.ts % snap.bucket_ms);
    let c = state.lastCandle;
    if (!c || start > c.start) c = state.lastCandle = { start, open: t.price, high: t.price, low: t.price, close: t.price };
    else if (start === c.start) { c.high = Math.max(c.high, t.price); c.low = Math.min(c.low, t.price); c.close = t.price; }
    else return;
    candles.update({ time: sec(c.start), open: c.open, high: c.high, low: c.low, close: c.close });
    if (snap.basis === "ticks" && t.volume_24h != null) {
      const bar = (t.volume_24h * snap.bucket_ms) / DAY_MS;
      state.bars.set(c.start, bar);
      volume.update({ time: sec(c.start), value: bar, color: barColor([0, c.open, 0, 0, c.close]) });
      s.volume = [...state.bars.values()].reduce((a, b) => a + b, 0);
    }
    if (s.first == null) s.first = t.price;
    s.price = t.price;
    s.change = t.price - s.first;
    s.change_pct = s.first ? (s.change / s.first) * 100 : null;
    s.min = s.min == null ? t.price : Math.min(s.min, t.price);
    s.max = s.max == null ? t.price : Math.max(s.max, t.price);
    s.last_update = t.ts;
    s.count = (s.count || 0) + 1;
    if (snap.source == null) { snap.source = t.source; snap.simulated = t.source === "simulated"; }
    document.body.dataset.ticks = String(Number(document.body.dataset.ticks || 0) + 1);
    if (state.feedDown) onStatus({ live: true }); // data flows again
    renderStats();
  }

  function setStatus(text, cls) { const el = $("status"); el.textContent = text; el.className = "status " + cls; }

  function renderBanner() {
    const reason = state.lost || state.feedDown || state.historyDown;
    const banner = $("stale");
    if (!reason !== banner.hidden) {
      if (reason) document.body.dataset.staleShown = String(Number(document.body.dataset.staleShown || 0) + 1);
      banner.hidden = !reason;
      document.body.classList.toggle("is-stale", Boolean(reason));
    }
    $("stale-reason").textContent = reason || "";
  }

  function onStatus(msg) {
    state.feedDown = msg.live ? null : (msg.message || "live feed interrupted");
    if (state.socket && state.socket.readyState === WebSocket.OPEN) setStatus(msg.live ? "live" : "stale", msg.live ? "live" : "reconnecting");
    renderBanner();
  }

  function onError(msg) {
    console.warn("server:", msg.message);
    if (msg.retry_ms == null) return;
    state.historyDown = msg.message;
    renderBanner();
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(subscribe, msg.retry_ms * (0.8 + Math.random() * 0.4));
  }

  function subscribe(refresh = false) {
    const sock = state.socket;
    state.refreshing = refresh === true;
    if (!state.refreshing) state.indicatorData = null;
    clearTimeout(state.refreshTimer);
    if (state.indicators.size) state.refreshTimer = setTimeout(() => subscribe(true), 60000);
    if (sock && sock.readyState === WebSocket.OPEN) {
      const ask = { type: "subscribe", symbol: state.symbol, range: state.range };
      if (state.indicators.size) ask.indicators = true;
      sock.send(JSON.stringify(ask));
    }
  }

  function useSymbol(symbol) {
    state.symbol = symbol;
    state.indicators = new Set(remembered()[symbol] || []);
    activate("symbols", "symbol", symbol);
    history.replaceState(null, "", `?symbol=${encodeURIComponent(symbol)}`);
    showIndicators();
  }

  function connect() {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
    const sock = new WebSocket(url);
    state.socket = sock;
    sock.onopen = () => {
      state.attempts = 0; state.feedDown = null; setStatus("live", "live"); subscribe();
      if (state.lost) { state.lost = "reconnected, reloading the chart…"; renderBanner(); }
    };
    sock.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "snapshot") onSnapshot(msg);
      else if (msg.type === "tick") onTick(msg);
      else if (msg.type === "ticks") msg.ticks.forEach(onTick);
      else if (msg.type === "indicators") onIndicators(msg);
      else if (msg.type === "status") onStatus(msg);
      else if (msg.type === "error") onError(msg);
      else if (msg.type === "alert") window.cryptoPulseAlerts?.receive(msg);  // webui/static/alerts.js
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

  function activate(nav, attr, value) {
    for (const b of document.querySelectorAll(`#${nav} button`)) b.classList.toggle("active", b.dataset[attr] === value);
  }

  function showKind() {
    line.applyOptions({ visible: state.kind === "line" });
    candles.applyOptions({ visible: state.kind === "candles" });
    activate("kinds", "kind", state.kind);
  }

  $("symbols").addEventListener("click", (e) => {
    const v = e.target.dataset.symbol; if (!v) return;
    useSymbol(v); subscribe();
  });
  $("indicators").addEventListener("click", (e) => {
    const v = e.target.dataset.indicator; if (!v) return;
    if (state.indicators.has(v)) state.indicators.delete(v); else state.indicators.add(v);
    remember(); showIndicators();
    if (state.indicators.size && !state.indicatorData) subscribe(true); // the first one on: ask for the values
    else if (!state.indicators.size) clearTimeout(state.refreshTimer);
  });
  $("ranges").addEventListener("click", (e) => {
    const v = e.target.dataset.range; if (!v) return;
    state.range = v; activate("ranges", "range", v); subscribe();
  });
  $("kinds").addEventListener("click", (e) => { const v = e.target.dataset.kind; if (v) { state.kind = v; showKind(); } });

  const asked = new URLSearchParams(location.search).get("symbol")?.toUpperCase();
  useSymbol(document.body.dataset.symbols.split(",").includes(asked) ? asked : state.symbol);
  activate("ranges", "range", state.range); showKind();
  window.dashboard = { state, chart };
  connect();
})();
