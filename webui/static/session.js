// The account a page is logged in as (docs/security.md): its name and a "Log out" button in the header, when the
// dashboard has accounts (the body's data-user, set by the server). Logging out posts /logout with the page's CSRF
// token. Every 30 s the page asks who it is: a session that ended elsewhere (a logout in another tab, a removed
// account, the idle or absolute limit) sends it to the login page.
(() => {
  "use strict";
  const user = document.body.dataset.user;
  if (!user) return;
  const csrf = document.body.dataset.csrf || "";
  const box = document.createElement("span");
  box.id = "account";
  const name = document.createElement("span");
  name.id = "account-name";
  name.textContent = user + (document.body.dataset.role === "user" ? "" : ` (${document.body.dataset.role})`);
  const out = document.createElement("button");
  out.id = "logout";
  out.type = "button";
  out.textContent = "Log out";
  out.onclick = () => {
    out.disabled = true;
    fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrf } })
      .finally(() => { window.location.assign("/login"); });
  };
  box.append(name, out);
  const header = document.querySelector("header");
  (header || document.body).appendChild(box);
  setInterval(() => {
    fetch("/auth/me", { headers: { Accept: "application/json" } }).then((r) => {
      if (r.status === 401) window.location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    }).catch(() => {});
  }, 30000);
})();
