// Price alerts on the page (docs/alerts.md): the recent ones listed (GET /alerts/recent), each new one pushed over
// the page's WebSocket as {"type": "alert"} and handed here by the page's script; shown as a notice on the page and,
// when the user allows it, as a browser notification. Text only (textContent): an alert's fields never become HTML.
(() => {
  "use strict";
  const MAX = 20;
  const seen = new Set();
  let list, notice, hideTimer;

  function fmtTime(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

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
    empty.textContent = "none yet (control alerts add BTC above 70000)";
    list.appendChild(empty);
    box.appendChild(list);
    (document.getElementById("panel") || document.body).appendChild(box);
    notice = document.createElement("div");
    notice.id = "alert-notice";
    notice.setAttribute("role", "alert");
    notice.hidden = true;
    notice.onclick = () => { notice.hidden = true; };
    document.body.appendChild(notice);
  }

  function item(alert) {
    const li = document.createElement("li");
    li.className = `alert-item ${alert.direction === "down" ? "down" : "up"}`;
    li.dataset.id = alert.id;
    const time = document.createElement("time");
    time.textContent = fmtTime(alert.ts);
    const text = document.createElement("span");
    text.textContent = ` ${alert.message}`;
    li.append(time, text);
    return li;
  }

  function add(alert, live) {
    if (!alert || typeof alert.id !== "string" || seen.has(alert.id)) return;
    seen.add(alert.id);
    list.querySelector(".alerts-empty")?.remove();
    list.prepend(item(alert));
    while (list.children.length > MAX) list.lastChild.remove();
    if (!live) return;
    notice.textContent = `🔔 ${alert.message}`;
    notice.hidden = false;
    clearTimeout(hideTimer);
    hideTimer = setTimeout(() => { notice.hidden = true; }, 15000);
    if ("Notification" in window && Notification.permission === "granted") {
      try { new Notification(`CryptoPulse: ${alert.symbol}`, { body: alert.message, tag: alert.id }); } catch (e) { /* not here */ }
    }
  }

  window.cryptoPulseAlerts = { receive: (msg) => add(msg, true) };

  function start() {
    build();
    fetch("/alerts/recent").then((r) => (r.ok ? r.json() : { alerts: [] })).then((body) => {
      (body.alerts || []).slice().reverse().forEach((a) => add(a, false));
    }).catch(() => {});
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
