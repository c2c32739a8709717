// Price alerts on the page (docs/alerts.md): the recent ones listed (GET /alerts/recent), each new one pushed over
// the page's WebSocket as {"type": "alert"} and handed here by the page's script; shown as a notice on the page and,
// when the user allows it, as a browser notification. Text only (textContent): an alert's fields never become HTML.
// Under the list, the rules in force (GET /alerts/rules) and, for a client allowed to change them (this machine by
// default, docs/security.md), a form that adds one (POST, JSON) and a remove button on each (DELETE): webui/rules.py.
// The form offers the channels (`control channels add`) a rule's alerts may be delivered to; each listed alert says
// what became of it on its channels (GET /alerts/recent's `deliveries`, asked again a little after a live alert).
(() => {
  "use strict";
  const MAX = 20;
  const seen = new Set();
  let list, notice, hideTimer;

  function build() {
    const box = document.createElement("section");
    box.id = "alerts";
    box.setAttribute("aria-label", "price alerts");
    const head = document.createElement("div");
    head.className = "alerts-head";
    const title = document.createElement("h2");
    title.textContent = "Alerts";
    head.appendChild(title);
    if ("Notification" in window && Notification.permission === "default") {
      const ask = document.createElement("button");
      ask.id = "alerts-notify";
      ask.textContent = "Notify me";
      ask.title = "show alerts as browser notifications";
      ask.onclick = () => Notification.requestPermission().then(() => ask.remove());
      head.appendChild(ask);
    }
    box.appendChild(head);
    list = document.createElement("ol");
    list.id = "alerts-list";
    const empty = document.createElement("li");
    empty.className = "alerts-empty";
    empty.textContent = "none yet (add a rule below, or: control alerts add BTC above 70000)";
    list.appendChild(empty);
    box.appendChild(list);
    box.appendChild(buildRules());
    (document.getElementById("panel") || document.body).appendChild(box);
    notice = document.createElement("div");
    notice.id = "alert-notice";
    notice.setAttribute("role", "alert");
    notice.hidden = true;
    notice.onclick = () => { notice.hidden = true; };
    document.body.appendChild(notice);
  }

  // ---- rules: the list and the form ----
  let rulesList, form, formStatus, channels, writable = false;

  function el(tag, props, ...children) {
    const node = Object.assign(document.createElement(tag), props || {});
    node.append(...children);
    return node;
  }

  function buildRules() {
    const box = el("div", { id: "alert-rules" });
    box.appendChild(el("h3", { textContent: "Rules" }));
    rulesList = el("ul", { id: "alert-rules-list" });
    box.appendChild(rulesList);
    const symbols = (document.body.dataset.symbols || "").split(",").filter(Boolean);
    const asked = (new URLSearchParams(location.search).get("symbol") || "").toUpperCase();
    const coin = el("select", { name: "symbol", title: "coin" },
      ...symbols.map((s) => el("option", { value: s, textContent: s, selected: s === asked })));
    const condition = el("select", { name: "condition", title: "condition" },
      el("option", { value: "above", textContent: "above" }), el("option", { value: "below", textContent: "below" }),
      el("option", { value: "move", textContent: "move %" }));
    const value = el("input", { name: "value", type: "number", step: "any", min: "0", required: true,
      placeholder: "price", title: "the price, or the percent of a move" });
    const minutes = el("input", { name: "minutes", type: "number", step: "1", min: "1", placeholder: "minutes",
      title: "a move's window, in minutes", hidden: true });
    const source = el("input", { name: "source", type: "text", placeholder: "source (any)", maxLength: 32,
      title: "only ticks of this source (simulated, binance, ...); empty: every source" });
    condition.onchange = () => {
      const move = condition.value === "move";
      minutes.hidden = !move;
      minutes.required = move;
      value.placeholder = move ? "percent" : "price";
    };
    channels = el("span", { id: "alert-rule-channels", title: "deliver its alerts to these channels" });
    form = el("form", { id: "alert-rule-form", hidden: true }, coin, condition, value, minutes, source, channels,
      el("button", { type: "submit", textContent: "Add" }));
    form.onsubmit = (event) => {
      event.preventDefault();
      const rule = { symbol: coin.value, condition: condition.value, value: Number(value.value) };
      if (condition.value === "move") rule.minutes = Number(minutes.value);
      if (source.value.trim()) rule.source = source.value.trim();
      const notify = [...channels.querySelectorAll("input:checked")].map((box) => box.value);
      if (notify.length) rule.notify = notify;
      send("POST", "/alerts/rules", rule).then((body) => {
        say(`added: ${body.rule.text}`);
        value.value = "";
        loadRules();
      }).catch((error) => say(error.message, true));
    };
    box.appendChild(form);
    formStatus = el("div", { id: "alert-rule-status", role: "status" });
    box.appendChild(formStatus);
    return box;
  }

  function say(text, bad) {
    formStatus.textContent = text;
    formStatus.className = bad ? "bad" : "";
  }

  function send(method, url, body) {
    const init = { method, headers: {} };
    if (document.body.dataset.csrf) init.headers["X-CSRF-Token"] = document.body.dataset.csrf;  // with accounts
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then((r) => r.json().catch(() => ({})).then((answer) => {
      if (!r.ok) throw new Error(answer.error || `HTTP ${r.status}`);
      return answer;
    }));
  }

  function showRules(rules) {
    rulesList.replaceChildren();
    if (!rules.length) rulesList.appendChild(el("li", { className: "alerts-empty", textContent: "no rules" }));
    for (const rule of rules) {
      const li = el("li", { className: "alert-rule" }, el("span", { textContent: `${rule.text} ` }));
      li.dataset.id = rule.id;
      if (writable) {
        const remove = el("button", { type: "button", className: "remove", textContent: "✕", title: `remove rule ${rule.id}` });
        remove.onclick = () => send("DELETE", `/alerts/rules/${encodeURIComponent(rule.id)}`)
          .then(() => { say(`removed: ${rule.text}`); loadRules(); })
          .catch((error) => say(error.message, true));
        li.appendChild(remove);
      }
      rulesList.appendChild(li);
    }
  }

  function showChannels(list) {
    const checked = new Set([...channels.querySelectorAll("input:checked")].map((box) => box.value));
    channels.replaceChildren(...list.map((c) => el("label", { title: `${c.kind}: deliver to ${c.name}` },
      el("input", { type: "checkbox", name: "notify", value: c.name, checked: checked.has(c.name) }), ` ${c.name}`)));
  }

  function loadRules() {
    return send("GET", "/alerts/rules").then((body) => {
      writable = !!body.writable;
      form.hidden = !writable;
      showChannels(body.channels || []);
      if (!writable) say("rules are managed from the dashboard's own machine (or with control alerts)");
      showRules(body.rules || []);
    }).catch((error) => say(`rules not loaded: ${error.message}`, true));
  }

  function item(alert) {
    const li = document.createElement("li");
    li.className = `alert-item ${alert.direction === "down" ? "down" : "up"}`;
    li.dataset.id = alert.id;
    const time = document.createElement("time");
    time.dataset.ts = alert.ts;
    time.textContent = window.cryptoPulseClock.time(alert.ts); // 18:52:47 in the chart's time zone (clock.js)
    const text = document.createElement("span");
    text.textContent = ` ${alert.message}`;
    li.append(time, text, el("span", { className: "alert-deliveries" }));
    showDeliveries(li, alert);
    return li;
  }

  // "→ phone ✓ ops …": where the alert went (✓ delivered, … retrying or not yet, ✗ given up)
  const MARK = { delivered: "✓", retrying: "…", "dead-lettered": "✗" };
  function showDeliveries(li, alert) {
    const span = li.querySelector(".alert-deliveries");
    const names = alert.channels || [];
    if (!span || !names.length) return;
    const done = alert.deliveries || {};
    span.replaceChildren(" → ", ...names.map((name) => {
      const d = done[name];
      const mark = el("span", { className: `delivery ${d ? d.outcome : "pending"}`,
        textContent: `${name} ${d ? MARK[d.outcome] || "?" : "…"} `,
        title: d ? `${d.outcome}${d.status != null ? ` (${d.status})` : ""} at ${window.cryptoPulseClock.time(d.at)}`
          : "not delivered yet" });
      return mark;
    }));
  }

  let refreshTimers = [];
  function refreshDeliveries() {
    return fetch("/alerts/recent").then((r) => (r.ok ? r.json() : { alerts: [] })).then((body) => {
      for (const alert of body.alerts || []) {
        const li = list.querySelector(`li[data-id="${CSS.escape(alert.id)}"]`);
        if (li) showDeliveries(li, alert);
      }
    }).catch(() => {});
  }

  function add(alert, live) {
    if (!alert || typeof alert.id !== "string" || seen.has(alert.id)) return;
    seen.add(alert.id);
    list.querySelector(".alerts-empty")?.remove();
    list.prepend(item(alert));
    while (list.children.length > MAX) list.lastChild.remove();
    if (!live) return;
    if ((alert.channels || []).length) {  // ask again what became of it, once it has had time to go
      refreshTimers.forEach(clearTimeout);
      refreshTimers = [3000, 20000].map((ms) => setTimeout(refreshDeliveries, ms));
    }
    notice.textContent = `🔔 ${alert.message}`;
    notice.hidden = false;
    clearTimeout(hideTimer);
    hideTimer = setTimeout(() => { notice.hidden = true; }, 15000);
    if ("Notification" in window && Notification.permission === "granted") {
      try { new Notification(`CryptoPulse: ${alert.symbol}`, { body: alert.message, tag: alert.id }); } catch (e) { /* not here */ }
    }
  }

  window.cryptoPulseAlerts = { receive: (msg) => add(msg, true), reloadRules: () => loadRules() };
  // the reader switched between UTC and local time: the list's times follow the chart's
  window.addEventListener("cryptopulse:timezone", () => {
    for (const time of list?.querySelectorAll("time[data-ts]") || []) {
      time.textContent = window.cryptoPulseClock.time(Number(time.dataset.ts));
    }
  });

  function start() {
    build();
    fetch("/alerts/recent").then((r) => (r.ok ? r.json() : { alerts: [] })).then((body) => {
      (body.alerts || []).slice().reverse().forEach((a) => add(a, false));
    }).catch(() => {});
    loadRules();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
