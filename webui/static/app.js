// CryptoPulse dashboard: one WebSocket, subscribe {symbol, range, interval}; the snapshot fills the charts, ticks
// update them, and scrolling back loads older bars a page at a time from the history API.
"use strict";
(() => {
  const LWC = window.LightweightCharts;
  const clock = window.cryptoPulseClock; // webui/static/clock.js
  const DAY_MS = 86400000;
  const WEEK_MS = 7 * DAY_MS;
  const PAGE_BARS = 1000; // bars asked for per page when scrolling back
  // The page before the first bar is asked for when the reader scrolls (or zooms out) past that bar: the visible
  // range then starts left of it. A fitted chart starts exactly at it, so a chart that is only shown loads nothing.
  const pastTheStart = (range) => range != null && range.from < -0.5;
  const INDICATORS = ["sma20", "sma50", "ema20", "ema50", "vwap", "rsi14"];
  const TIMEFRAMES = JSON.parse(document.body.dataset.timeframes); // per range: its default and allowed (the server's)
  const $ = (id) => document.getElementById(id);
  const state = {
    symbol: document.body.dataset.symbols.split(",")[0], range: "1h", interval: TIMEFRAMES["1h"].default,
    kind: "line", snapshot: null, stats: null, attempts: 0, socket: null,
    // what the chart shows, times in epoch ms: the snapshot's bars, older pages before them, live ticks after
    data: { line: [], candles: [], volume: [], indicators: {} },
    older: null,    // where the next page back ends (epoch ms); null: none to load (the history ends, or no chart)
    paging: false,  // a page is on its way
    lastLine: 0,    // the newest line point's time: the chart only grows to the right
    // Why the chart may be behind, shown by the "stale / reconnecting" banner until data flows again:
    lost: null,        // the socket closed: until the snapshot after reconnecting
    feedDown: null,    // the server's live feed is interrupted (a `status` message): until it says live or a tick comes
    historyDown: null, // the server could not read history: until a snapshot arrives (asked again after retry_ms)
    retryTimer: null,
    indicators: new Set(), // the indicators shown on this coin's chart (remembered per coin in localStorage)
    indicatorsLoaded: false, // the current chart's indicator values have come (an `indicators` message)
    refreshTimer: null,    // while indicators are shown, a fresh snapshot each minute keeps them current
    refreshing: false,     // the snapshot asked for is such a refresh: the chart keeps its zoom and its older pages
  };
  const chartKey = () => `${state.symbol}|${state.range}|${state.interval}`;

  // A time-axis mark between two whole minutes gets its seconds: where the points are seconds apart (the 1 h range,
  // or any range holding only a few minutes of ticks) the axis puts several marks in a minute, which the library wrote
  // as "18:53", like the minute's own mark, three times in a row. Every other mark keeps the library's label (null):
  // minutes as 18:53, days, months, years. (secondsVisible would also add ":00" to every minute's mark.) The times are
  // the chart's own, already moved to the chosen zone (clock.chartSeconds).
  const axisLabel = (time, type) =>
    (type === LWC.TickMarkType.Time && typeof time === "number" && time % 60 !== 0 ? clock.chartTime(time) : null);

  const chart = LWC.createChart($("chart"), {
    autoSize: true,
    layout: { background: { color: "transparent" }, textColor: "#8a94a8", attributionLogo: false },
    grid: { vertLines: { color: "#1f2738" }, horzLines: { color: "#1f2738" } },
    timeScale: { timeVisible: true, secondsVisible: false, tickMarkFormatter: axisLabel, borderColor: "#2a3550" },
    localization: { timeFormatter: (time) => clock.chartDateTime(time) }, // the crosshair's label on the time axis
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

  // Indicators (computed by the server over the chart's own bars, the `indicators` message, and a page's columns):
  // overlays on the price scale, RSI in a pane of its own under the chart.
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

  // --- times: the chart is given the chosen zone's wall clock as if it were UTC (clock.js) ---

  // Points with the chart's times, in order. Where clocks go back (local time, autumn), an hour's times come again:
  // the chart takes only rising times, so a bar whose time is not after the one before it is merged into it.
  function chartPoints(points, make, merge) {
    const out = [];
    for (const point of points) {
      const made = make(point);
      made.time = clock.chartSeconds(point[0]);
      const last = out[out.length - 1];
      if (last && made.time <= last.time) merge(last, made);
      else out.push(made);
    }
    return out;
  }
  const keepLater = (last, made) => { last.value = made.value; };
  const mergeBars = (last, made) => {
    last.high = Math.max(last.high, made.high); last.low = Math.min(last.low, made.low); last.close = made.close;
  };
  const addVolume = (last, made) => { last.value += made.value; };

  // The start of the `width` bar holding `ts`: weeks from Monday 00:00 UTC (1970-01-01 was a Thursday), as the server's.
  const bucketStart = (ts, width) => {
    const origin = width === WEEK_MS ? 4 * DAY_MS : 0;
    return ts - ((((ts - origin) % width) + width) % width);
  };

  function barColor(c) {
    return c && c[4] < c[1] ? "rgba(239,83,80,.35)" : "rgba(38,166,154,.35)";
  }

  // Everything the chart shows, from state.data (after a snapshot, a page, a change of time zone).
  function render() {
    const d = state.data;
    line.setData(chartPoints(d.line, ([, v]) => ({ value: v }), keepLater));
    candles.setData(chartPoints(d.candles, ([, o, h, l, c]) => ({ open: o, high: h, low: l, close: c }), mergeBars));
    const colors = new Map(d.candles.map((c) => [c[0], barColor(c)]));
    volume.setData(chartPoints(d.volume, ([t, v]) => ({ value: v, color: colors.get(t) }), addVolume));
    showIndicators();
    renderLegend();
  }

  // --- the legend (coin, bars, zone; the values under the crosshair) and the side panel ---

  const sec = (ms) => clock.chartSeconds(ms);
  const digits = (p) => (p >= 1000 ? 2 : p >= 1 ? 4 : 6);
  // Decimals follow the coin's price, not the number shown: a $3,000 coin's change of $18 reads "$18.00".
  const money = (v, ref) => {
    if (v == null) return "—";
    const d = digits(Math.abs(ref ?? state.stats?.price ?? v));
    return "$" + v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  };
  const compact = (v) => (v == null ? "—" : "$" + Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 2 }).format(v));
  const setText = (id, text, value) => { const el = $(id); el.textContent = text; if (value !== undefined) el.dataset.value = value ?? ""; };
  const bars = () => (state.snapshot?.basis === "ticks" ? `${state.interval} bars of ticks` : `${state.interval} candles`);

  function renderLegend(values = "") {
    const ended = state.snapshot && state.older === null && state.data.candles.length ? " · start of history" : "";
    setText("legend-title", `${state.symbol}/USD · ${bars()} · ${clock.zoneName()}${ended}`);
    setText("legend-values", values);
  }

  chart.subscribeCrosshairMove((param) => {
    if (!param.time || !param.seriesData) { renderLegend(); return; }
    const c = param.seriesData.get(candles), l = param.seriesData.get(line), v = param.seriesData.get(volume);
    let text = clock.chartDateTime(param.time);
    if (state.kind === "candles" && c) text += `  O ${money(c.open)} H ${money(c.high)} L ${money(c.low)} C ${money(c.close)}`;
    else if (l) text += `  ${money(l.value)}`;
    if (v) text += `  vol ${compact(v.value)}`;
    renderLegend(text);
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
    setText("p-range", `${snap.range} · ${bars()}`);
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

  // --- indicators ---

  // Values of one indicator by time, older ones first: those before `from` kept, the new ones from `from` on.
  const joined = (old, fresh, from) => [...(old || []).filter(([t]) => t < from), ...fresh];

  function onIndicators(msg) {
    if (msg.symbol !== state.symbol || msg.range !== state.range || msg.interval !== state.interval) return;
    const from = state.snapshot?.candles[0]?.[0] ?? msg.start;
    for (const name of INDICATORS) state.data.indicators[name] = joined(state.data.indicators[name], msg.series[name] || [], from);
    state.indicatorsLoaded = true;
    showIndicators();
  }

  function showIndicators() {
    const data = state.data.indicators;
    const points = (name) => chartPoints(data[name] || [], ([, v]) => ({ value: v }), keepLater);
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

  // --- the snapshot, live ticks, and older pages ---

  function onSnapshot(snap) {
    if (snap.symbol !== state.symbol || snap.range !== state.range || snap.interval !== state.interval) return; // an older ask
    const same = state.refreshing && state.snapshot && state.snapshot.symbol === snap.symbol
      && state.snapshot.range === snap.range && state.snapshot.interval === snap.interval;
    const from = snap.candles[0]?.[0] ?? snap.start;
    const d = state.data;
    // a refresh of the same chart keeps what was loaded before the new window's first bar; another chart starts anew
    state.data = {
      line: [...(same ? d.line.filter(([t]) => t < from) : []), ...snap.line],
      candles: [...(same ? d.candles.filter(([t]) => t < from) : []), ...snap.candles],
      volume: [...(same ? d.volume.filter(([t]) => t < from) : []), ...snap.volume],
      indicators: same ? d.indicators : {},
    };
    if (!same) { state.older = snap.candles.length ? snap.candles[0][0] : null; state.indicatorsLoaded = false; }
    state.snapshot = snap;
    state.stats = { ...snap.stats };
    state.lastLine = snap.line.length ? snap.line[snap.line.length - 1][0] : 0;
    render();
    if (!same) chart.timeScale().fitContent();
    state.refreshing = false;
    document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots || 0) + 1);
    document.body.dataset.historyEnd = "";
    state.lost = null; state.historyDown = null; clearTimeout(state.retryTimer);
    renderStats(); renderBanner();
  }

  function onTick(t) {
    const snap = state.snapshot, s = state.stats, d = state.data;
    if (!snap || t.symbol !== state.symbol || t.source !== (snap.source ?? t.source)) return;
    const second = t.ts - (t.ts % 1000);
    if (second < state.lastLine) return; // older than the chart's last point: the chart only grows to the right
    const lastPoint = d.line[d.line.length - 1];
    if (lastPoint && lastPoint[0] === second) lastPoint[1] = t.price; else d.line.push([second, t.price]);
    state.lastLine = second;
    draw(line, { time: sec(second), value: t.price });
    // the current bar, built from the ticks as the server builds its bars (snapshot.bucket_ms, weeks from Monday)
    const start = bucketStart(t.ts, snap.bucket_ms);
    let c = d.candles[d.candles.length - 1];
    if (!c || start > c[0]) { c = [start, t.price, t.price, t.price, t.price]; d.candles.push(c); }
    else if (start === c[0]) { c[2] = Math.max(c[2], t.price); c[3] = Math.min(c[3], t.price); c[4] = t.price; }
    else return;
    draw(candles, { time: sec(c[0]), open: c[1], high: c[2], low: c[3], close: c[4] });
    if (snap.basis === "ticks" && t.volume_24h != null) {
      const bar = (t.volume_24h * snap.bucket_ms) / DAY_MS;
      const v = d.volume[d.volume.length - 1];
      if (v && v[0] === c[0]) v[1] = bar; else d.volume.push([c[0], bar]);
      draw(volume, { time: sec(c[0]), value: bar, color: barColor(c) });
      s.volume = d.volume.filter(([vt]) => vt >= snap.start).reduce((a, [, b]) => a + b, 0);
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

  // A live point, unless its chart time is behind the last one (the hour local clocks repeat in autumn).
  function draw(series, point) {
    const data = series.data();
    if (!data.length || point.time >= data[data.length - 1].time) series.update(point);
  }

  // Scrolled past the first bar: the page before it, from the history API (webui/api.py), prepended.
  chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
    if (pastTheStart(range)) loadOlder();
  });

  function loadOlder() {
    if (state.paging || state.older == null || !state.snapshot) return;
    const key = chartKey();
    state.paging = true;
    const ask = new URLSearchParams({ symbol: state.symbol, interval: state.interval, before: String(state.older),
      limit: String(PAGE_BARS), indicators: INDICATORS.join(",") });
    fetch(`/api/v1/history?${ask}`).then((r) => r.json().catch(() => ({})).then((body) => {
      if (!r.ok) throw Object.assign(new Error(body.error || `HTTP ${r.status}`), { retry: Number(r.headers.get("Retry-After")) || 5 });
      return body;
    })).then((page) => {
      state.paging = false;
      if (key !== chartKey()) return; // the chart changed meanwhile
      prepend(page);
      // still past the start (an empty page: a gap, or bars too few to fill the view): the next one
      if (pastTheStart(chart.timeScale().getVisibleLogicalRange())) setTimeout(loadOlder, 0);
    }).catch((error) => {
      state.paging = false;
      console.warn("older bars:", error.message);
      if (key === chartKey()) setTimeout(loadOlder, (error.retry || 5) * 1000);
    });
  }

  function prepend(page) {
    const d = state.data;
    const first = d.candles[0]?.[0] ?? Infinity;
    const rows = page.rows.filter((r) => r[0] < first);
    const column = Object.fromEntries(page.columns.map((name, i) => [name, i]));
    const visible = chart.timeScale().getVisibleRange();
    d.candles = [...rows.map((r) => r.slice(0, 5)), ...d.candles];
    d.volume = [...rows.filter((r) => r[5] != null).map((r) => [r[0], r[5]]), ...d.volume];
    d.line = [...rows.map((r) => [r[0], r[4]]), ...d.line];
    for (const name of INDICATORS) {
      if (column[name] == null) continue;
      const older = rows.filter((r) => r[column[name]] != null).map((r) => [r[0], r[column[name]]]);
      d.indicators[name] = [...older, ...(d.indicators[name] || [])];
    }
    state.older = page.next_before;
    render();
    if (visible) chart.timeScale().setVisibleRange(visible); // the reader stays where they were
    document.body.dataset.pages = String(Number(document.body.dataset.pages || 0) + 1);
    document.body.dataset.historyEnd = state.older === null ? "1" : "";
  }

  // --- the connection ---

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
    clearTimeout(state.refreshTimer);
    if (state.indicators.size) state.refreshTimer = setTimeout(() => subscribe(true), 60000);
    if (sock && sock.readyState === WebSocket.OPEN) {
      const ask = { type: "subscribe", symbol: state.symbol, range: state.range, interval: state.interval };
      if (state.indicators.size) ask.indicators = true;
      sock.send(JSON.stringify(ask));
    }
  }

  function connect() {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
    const sock = new WebSocket(url);
    state.socket = sock;
    sock.onopen = () => {
      state.attempts = 0; state.feedDown = null; setStatus("live", "live"); subscribe(state.snapshot != null);
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

  // --- the header's controls ---

  function activate(nav, attr, value) {
    for (const b of document.querySelectorAll(`#${nav} button`)) b.classList.toggle("active", b.dataset[attr] === value);
  }

  // The timeframes the range offers (the others greyed out), the chosen one marked.
  function showTimeframes() {
    const allowed = TIMEFRAMES[state.range].allowed;
    for (const b of document.querySelectorAll("#frames button")) {
      b.disabled = !allowed.includes(b.dataset.frame);
      b.title = b.disabled ? `${b.dataset.frame} bars do not fit range ${state.range}` : `${b.dataset.frame} bars`;
    }
    activate("frames", "frame", state.interval);
  }

  function showKind() {
    line.applyOptions({ visible: state.kind === "line" });
    candles.applyOptions({ visible: state.kind === "candles" });
    activate("kinds", "kind", state.kind);
  }

  function showZone() {
    const el = $("zone");
    el.textContent = clock.zone() === "utc" ? "UTC" : "Local";
    el.title = `times in ${clock.zoneName()}; click for ${clock.zone() === "utc" ? "local time" : "UTC"}`;
    el.dataset.zone = clock.zone();
  }

  function useSymbol(symbol) {
    state.symbol = symbol;
    state.indicators = new Set(remembered()[symbol] || []);
    activate("symbols", "symbol", symbol);
    history.replaceState(null, "", `?symbol=${encodeURIComponent(symbol)}`);
    showIndicators();
  }

  $("symbols").addEventListener("click", (e) => {
    const v = e.target.dataset.symbol; if (!v) return;
    useSymbol(v); subscribe();
  });
  $("indicators").addEventListener("click", (e) => {
    const v = e.target.dataset.indicator; if (!v) return;
    if (state.indicators.has(v)) state.indicators.delete(v); else state.indicators.add(v);
    remember(); showIndicators();
    if (state.indicators.size && !state.indicatorsLoaded) subscribe(true); // the first one on: ask for the values
    else if (!state.indicators.size) clearTimeout(state.refreshTimer);
  });
  $("ranges").addEventListener("click", (e) => {
    const v = e.target.dataset.range; if (!v) return;
    state.range = v; state.interval = TIMEFRAMES[v].default; // each range opens on its own bars
    activate("ranges", "range", v); showTimeframes(); subscribe();
  });
  $("frames").addEventListener("click", (e) => {
    const v = e.target.dataset.frame; if (!v || e.target.disabled) return;
    state.interval = v; showTimeframes(); subscribe();
  });
  $("kinds").addEventListener("click", (e) => { const v = e.target.dataset.kind; if (v) { state.kind = v; showKind(); } });
  $("zone").addEventListener("click", () => {
    const visible = chart.timeScale().getVisibleLogicalRange();
    clock.setZone(clock.zone() === "utc" ? "local" : "utc");
    showZone(); render(); renderStats();
    if (visible) chart.timeScale().setVisibleLogicalRange(visible); // the same bars, their times relabelled
  });

  const asked = new URLSearchParams(location.search).get("symbol")?.toUpperCase();
  useSymbol(document.body.dataset.symbols.split(",").includes(asked) ? asked : state.symbol);
  activate("ranges", "range", state.range); showTimeframes(); showKind(); showZone(); renderLegend();
  window.dashboard = { state, chart, series: { line, candles, volume } };
  connect();
})();
