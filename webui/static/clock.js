// How the pages write a time: 24-hour HH:MM:SS, the convention of the chart's time axis (lightweight-charts writes
// 18:53, never 6:53 PM). Built from the Date's fields rather than toLocaleTimeString, which follows the browser's
// locale (en-US: "06:52:47 PM"), and whose `hour12: false` some engines read as h24 ("24:05:09" after midnight).
(() => {
  "use strict";
  const pad = (n) => String(n).padStart(2, "0");

  window.cryptoPulseClock = {
    // the browser's own time zone: the alerts' times, the panel's "last update"
    time: (ms) => {
      const d = new Date(ms);
      return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    },
    // UTC, as the chart's axis reads the epoch seconds it is given
    utcTime: (ms) => {
      const d = new Date(ms);
      return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
    },
    // the crosshair's tooltip: the locale's date, then the time as above
    dateTime: (ms) => `${new Date(ms).toLocaleDateString()} ${window.cryptoPulseClock.time(ms)}`,
  };
})();
