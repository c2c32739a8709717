// How the pages write a time: 24-hour HH:MM:SS, the convention of the chart's time axis (lightweight-charts writes
// 18:53, never 6:53 PM), in the time zone the chart page lets the reader choose, UTC or the browser's own, remembered
// in localStorage ("cryptopulse.timezone") for every page. Built from the Date's fields rather than
// toLocaleTimeString, which follows the browser's locale (en-US: "06:52:47 PM"), and whose `hour12: false` some
// engines read as h24 ("24:05:09" after midnight).
//
// The chart draws every time as UTC (lightweight-charts has no time zones), so the chart page hands it times shifted
// by the zone's offset at each instant (`chartSeconds`): its axis, crosshair and legend then read the chosen zone's
// wall clock with UTC getters (`chartTime`, `chartDateTime`), and the lists on the page, written by `time`, agree.
(() => {
  "use strict";
  const KEY = "cryptopulse.timezone";
  const pad = (n) => String(n).padStart(2, "0");
  const hms = (d, utc) => utc
    ? `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`
    : `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const ymd = (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  let zone = "utc";
  try { zone = localStorage.getItem(KEY) === "local" ? "local" : "utc"; } catch { /* private mode: UTC */ }

  const clock = {
    zone: () => zone,
    setZone(next) {
      zone = next === "local" ? "local" : "utc";
      try { localStorage.setItem(KEY, zone); } catch { /* private mode: not remembered */ }
      window.dispatchEvent(new CustomEvent("cryptopulse:timezone", { detail: zone }));
    },
    // "UTC", or the browser's zone as its offset now ("UTC+01:00")
    zoneName: () => {
      if (zone === "utc") return "UTC";
      const offset = -new Date().getTimezoneOffset();
      return `UTC${offset < 0 ? "−" : "+"}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
    },
    // an instant (epoch ms) in the chosen zone: the alerts' times, the panel's "last update"
    time: (ms) => hms(new Date(ms), zone === "utc"),
    // what the chart is given for an instant: epoch seconds moved by the zone's offset at that instant
    chartSeconds: (ms) => Math.floor(ms / 1000) - (zone === "utc" ? 0 : new Date(ms).getTimezoneOffset() * 60),
    // a time the chart gives back (shifted seconds) as the wall clock it stands for
    chartTime: (seconds) => hms(new Date(seconds * 1000), true),
    chartDateTime: (seconds) => `${ymd(new Date(seconds * 1000))} ${hms(new Date(seconds * 1000), true)}`,
  };
  window.cryptoPulseClock = clock;
})();
