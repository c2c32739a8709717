"""Who is asking: the login page, sessions, API tokens, and the check in front of every route (docs/security.md).

    GET  /login     the login page (a form; at phone width too)
    POST /login     name, password, csrf, next -> 303 to `next` with a session cookie; 401 the page again; 429 wait
    POST /logout    (X-CSRF-Token, or the form's csrf) -> the session ends on every process; 303 /login or 200 JSON

Modes (`mode`): *local* while no account exists (and WEBUI_AUTH is not `on`): every route as before accounts,
writes of rules from this machine only (webui/rules.py); but a request a trusted proxy forwarded, or any request to a
dashboard bound beyond loopback (without WEBUI_ALLOW_OPEN), is in login mode even then: nobody gets in.
*login* as soon as one exists: every route, the WebSocket
and the APIs need a session cookie or `Authorization: Bearer <token>`; without one, a page is a 303 to /login, the
rest a 401 (a WebSocket's handshake too). Only the login page and its stylesheet and icon are served to everyone,
and /healthz and /metrics to clients on this machine (probes). *starting* until the accounts topics were read
(webui/accounts.py): clients on this machine are served as in local mode, everyone else gets a 503.

Every write (a method other than GET/HEAD/OPTIONS) of a session needs its CSRF token in `X-CSRF-Token`; a token
of scope `read` may only read; a viewer writes nothing (webui/rules.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

from quart import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    has_request_context,
    has_websocket_context,
    redirect,
    render_template,
    request,
    websocket,
)

from cryptopulse import accounts
from cryptopulse.audit import event
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import ConfigError
from cryptopulse.outage import RateLimitFilter
from cryptopulse.times import now_ms
from webui.guard import PROXIED, client_address, is_local
from webui.protocol import is_loopback, origin_allowed
from webui.sessions import Session
from webui.state import State, state

log = logging.getLogger(__name__)
log.addFilter(RateLimitFilter(period=60, burst=10))

PUBLIC = frozenset({"/login", "/static/login.css", "/static/favicon.svg", "/favicon.ico"})
LOCAL_PROBES = frozenset({"/healthz", "/metrics"})  # for probes on this machine, without a login
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_COOKIE = "cryptopulse_login"  # the login form's nonce (double submit), before there is a session
MAX_FORM = 4096
STARTING_RETRY_S = 2

auth = Blueprint("auth", __name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from: an account (by a session or a token), or the local operator (no accounts)."""

    user: str | None  # None: local mode
    role: str  # admin | user | viewer; local mode: admin
    via: str  # local | web | token:<id>
    scope: str = "write"  # a token's scope; sessions and local mode write
    session: Session | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def may_write(self) -> bool:
        return self.role != "viewer" and self.scope == "write"

    def sees(self, owner: str | None) -> bool:
        """Whether a rule or an alert of `owner` is shown to it: its own, or everything for an admin (and in local
        mode, where there are no owners to tell apart)."""
        return self.user is None or self.is_admin or owner == self.user


LOCAL = Principal(None, "admin", "local")


def principal() -> Principal:
    """The principal of the request or WebSocket being handled (set by `authenticate`)."""
    return getattr(g, "principal", None) or LOCAL


def mode(shared: State) -> str:
    """local, login or starting (module docstring)."""
    feed = shared.accounts
    if feed is not None and not feed.ready.is_set():
        return "starting"
    if shared.config.auth == "on" or shared.book.has_accounts:
        return "login"
    if shared.config.host and not is_loopback(shared.config.host) and not shared.config.allow_open:
        return "login"  # served beyond this machine and every account was removed: nobody gets in, not everyone
    if request_scope().get(PROXIED):
        return "login"  # a trusted proxy forwarded it: the dashboard faces a network, and without accounts nobody
    return "local"


def request_scope() -> dict[str, Any]:
    if has_request_context():
        return request.scope
    if has_websocket_context():
        return websocket.scope
    return {}


def cookie_name(secure: bool) -> str:
    # __Host-: a browser keeps it only when Secure, for this host and path / (no subdomain can set or read it)
    return "__Host-cryptopulse" if secure else "cryptopulse"


def secure(scope: dict[str, Any]) -> bool:
    """Served over TLS: by the dashboard itself, or by a trusted proxy that said https (webui/guard.py)."""
    return scope.get("scheme") in ("https", "wss")


def bearer(headers: Any) -> str | None:
    value = headers.get("Authorization") or ""
    kind, _, credentials = value.partition(" ")
    return credentials.strip() if kind.lower() == "bearer" and credentials.strip() else None


def from_token(shared: State, text: str) -> Principal | None:
    parsed = accounts.parse_token(text)
    if parsed is None:
        return None
    token = shared.book.tokens.get(parsed[0])
    if not accounts.token_matches(token, parsed[1], now_ms()):
        return None
    assert token is not None
    user = shared.book.user(token.user)
    if user is None:
        return None
    return Principal(user.name, user.role, f"token:{token.id}", token.scope)


def from_session(shared: State, cookies: Any, scope: dict[str, Any]) -> Principal | None:
    session = shared.sessions.check(cookies.get(cookie_name(secure(scope))) or "", shared.book)
    if session is None:
        return None
    user = shared.book.user(session.user)
    assert user is not None, "Sessions.check refuses a session of an account that does not exist"
    return Principal(user.name, user.role, "web", "write", session)


def identify(shared: State, headers: Any, cookies: Any, scope: dict[str, Any]) -> Principal | None | str:
    """The principal of a request in login mode; None when it shows no credentials; a reason when it shows bad ones
    (a token that is not one, or no longer valid)."""
    text = bearer(headers)
    if text is not None:
        found = from_token(shared, text)
        return found if found is not None else "this API token is not valid (removed, expired, or mistyped)"
    return from_session(shared, cookies, scope)


def wants_page(path: str) -> bool:
    """A browser asking for a page (answered with the login page) rather than an API (answered 401)."""
    accept = request.headers.get("Accept") or ""
    return request.method == "GET" and not path.startswith(("/api/", "/alerts/")) and (
        "text/html" in accept or path in ("/", "/markets", "/chart"))


def refusal(status: int, reason: str, retry_s: float | None = None) -> Response:
    response = Response(f'{{"error": "{reason}"}}', status=status, content_type="application/json")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cryptopulse"'
    if retry_s is not None:
        response.headers["Retry-After"] = str(int(retry_s))
    return response


async def check_request() -> Response | None:
    """Before every HTTP request (after the Host check): who it is from (g.principal), or the answer refusing it."""
    shared = state(current_app)
    path = request.path
    current = mode(shared)
    local = is_local(request.scope, request.headers)
    if current == "local" or (current == "starting" and local):
        g.principal = LOCAL
        return None
    if path in PUBLIC and current == "login":
        return None
    if path in LOCAL_PROBES and local:
        return None
    if current == "starting":
        shared.metrics.refused["starting"] += 1
        return refusal(503, "the dashboard is starting (its accounts are being read); try again in a few seconds",
                       STARTING_RETRY_S)
    found = identify(shared, request.headers, request.cookies, request.scope)
    if isinstance(found, str) or found is None:
        shared.metrics.refused["unauthenticated"] += 1
        if found is None and wants_page(path):
            target = request.full_path.rstrip("?") if request.query_string else path
            return redirect(f"/login?{urlencode({'next': target})}", 303)
        return refusal(401, found or "log in (/login), or send Authorization: Bearer <token> (control tokens add)")
    g.principal = found
    if request.method not in SAFE_METHODS:
        if found.session is not None and path != "/logout" and \
                not shared.sessions.csrf_ok(found.session.id, request.headers.get("X-CSRF-Token")):
            shared.metrics.refused["csrf"] += 1
            return refusal(403, "missing or wrong X-CSRF-Token: reload the page")
        if found.scope != "write":
            shared.metrics.refused["scope"] += 1
            return refusal(403, "this API token may only read (control tokens add NAME --scope write)")
    return None


async def check_websocket() -> None:
    """Before every WebSocket handshake (after the Host check): as `check_request`, a refusal aborts it."""
    shared = state(current_app)
    current = mode(shared)
    if current == "local" or (current == "starting" and is_local(websocket.scope, websocket.headers)):
        g.principal = LOCAL
        return
    if current == "starting":
        shared.metrics.refused["starting"] += 1
        abort(503, "the dashboard is starting; try again in a few seconds")
    found = identify(shared, websocket.headers, websocket.cookies, websocket.scope)
    if isinstance(found, str) or found is None:
        shared.metrics.refused["unauthenticated"] += 1
        abort(401, found or "log in first")
    g.principal = found


def still_valid(shared: State, who: Principal, headers: Any, cookies: Any, scope: dict[str, Any]) -> bool:
    """Whether an open WebSocket's principal may go on (a logout, a removed account or token, expiry end it)."""
    if who.user is None:
        return mode(shared) != "login"  # accounts appeared while a local page was open: it must log in
    found = identify(shared, headers, cookies, scope)
    return isinstance(found, Principal) and found.user == who.user


def renew_cookie(response: Response) -> Response:
    """After a request of a session: the cookie signed again (its idle clock reset) at most once a minute."""
    shared = state(current_app)
    who = getattr(g, "principal", None)
    if who is not None and who.session is not None and shared.sessions.due_renewal(who.session):
        set_session_cookie(shared, response, shared.sessions.cookie(who.session))
    return response


def set_session_cookie(shared: State, response: Response, value: str) -> None:
    tls = secure(request.scope)
    response.set_cookie(cookie_name(tls), value, max_age=int(shared.sessions.absolute), path="/", secure=tls,
                        httponly=True, samesite="Strict")


def template_context() -> dict[str, Any]:
    """What every page's template knows: the account (data-user, data-role) and its CSRF token (data-csrf)."""
    who = principal()
    shared = state(current_app)
    csrf = shared.sessions.csrf(who.session.id) if who.session is not None else ""
    return {"account": who.user or "", "account_role": who.role if who.user else "", "csrf": csrf}


# --- the login page ---

def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only (never `//host` or a URL: an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or \
            any(ord(c) < 32 for c in target):
        return "/"
    return target


async def login_page(status: int = 200, message: str = "", name: str = "", target: str = "/",
                     retry_s: float | None = None) -> Response:
    shared = state(current_app)
    nonce = request.cookies.get(LOGIN_COOKIE) or ""
    if len(nonce) != 24:
        nonce = secrets.token_urlsafe(18)
    html = await render_template("login.html", message=message, name=name, target=safe_next(target),
                                 csrf=shared.sessions.login_token(nonce), no_accounts=not shared.book.has_accounts)
    response = Response(html, status=status, content_type="text/html; charset=utf-8")
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, path="/login", secure=secure(request.scope), httponly=True,
                        samesite="Strict")
    # the one page whose form posts itself to the dashboard
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    response.headers["Cache-Control"] = "no-store"
    # no-referrer (every other page's) makes Chromium post the form with `Origin: null`: the origin alone, to itself
    response.headers["Referrer-Policy"] = "same-origin"
    if retry_s is not None:
        response.headers["Retry-After"] = str(max(1, round(retry_s)))
    return response


@auth.get("/login")
async def show_login() -> Response:
    shared = state(current_app)
    target = safe_next(request.args.get("next"))
    if mode(shared) == "local":
        return redirect(target, 303)
    if from_session(shared, request.cookies, request.scope) is not None:
        return redirect(target, 303)
    return await login_page(target=target)


async def read_form(limit: int) -> dict[str, str] | None:
    """The urlencoded form of the request, read at most `limit` bytes of it whatever it says its length is
    (a chunked body has none); None when it is larger."""
    if (request.content_length or 0) > limit:
        return None
    data = await read_body(limit)
    if data is None:
        return None
    parsed = parse_qs(data.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=10)
    return {key: values[0] for key, values in parsed.items() if values}


async def read_body(limit: int) -> bytes | None:
    """The request's body, at most `limit` bytes: None as soon as more arrives (the rest is not read)."""
    chunks, size = [], 0
    async for chunk in request.body:
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def audit(shared: State, kind: str, user: str | None, *, via: str = "web", target: str | None = None,
          detail: str | None = None) -> None:
    """One audit record of this request (who, when, address, user agent), published in the background."""
    scope = request.scope if has_request_context() else websocket.scope
    headers = request.headers if has_request_context() else websocket.headers
    shared.trail.add(event(kind, user=user, via=via, address=client_address(scope),
                           user_agent=headers.get("User-Agent"), target=target, detail=detail))


@auth.post("/login")
async def do_login() -> Response:
    shared = state(current_app)
    if not origin_allowed(request.headers.get("Origin"), request.headers.get("Host"), shared.config.allowed_origins):
        shared.metrics.errors["origin"] += 1
        return refusal(403, "Origin not allowed: set WEBUI_ALLOWED_ORIGINS to the dashboard's public origin")
    form = await read_form(MAX_FORM)
    if form is None:
        return refusal(413, f"a login form is at most {MAX_FORM} bytes")
    name, given, target = form.get("name", ""), form.get("password", ""), safe_next(form.get("next"))
    if not shared.sessions.login_ok(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
        shared.metrics.refused["csrf"] += 1
        return await login_page(403, "The form expired: please try again.", target=target)
    try:
        name = accounts.user_name(name)
    except ConfigError:
        name = name.strip().lower()[:64]
    address = client_address(request.scope)
    wait = shared.throttle.wait(address, name)
    if wait > 0:
        audit(shared, "login_throttled", name or None, detail=f"asked again {wait:.0f} s early")
        return await login_page(429, f"Too many failed attempts: try again in {wait:.0f} s.", name, target, wait)
    async with shared.password_checks:  # argon2 costs ~50 ms and 64 MiB: a few at a time, never on the loop
        user = shared.book.user(name)
        matched = await asyncio.to_thread(accounts.password_matches, user, given)
    if not matched or user is None:
        delay = shared.throttle.failed(address, name)
        audit(shared, "login_failed", name or None, detail="no such account" if user is None else "wrong password")
        log.info("failed login for %r from %s", name, address)
        more = f" Wait {delay:.0f} s before the next attempt." if delay else ""
        return await login_page(401, f"Wrong name or password.{more}", name, target)
    shared.throttle.succeeded(address, name)
    session, cookie = shared.sessions.new(user.name)
    audit(shared, "login", user.name, target=session.id[:8])
    response = redirect(target, 303)
    set_session_cookie(shared, response, cookie)
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@auth.post("/logout")
async def do_logout() -> Response:
    shared = state(current_app)
    who = principal()
    wants_json = "X-CSRF-Token" in request.headers
    given = request.headers.get("X-CSRF-Token")
    if given is None:
        form = await read_form(MAX_FORM)
        given = (form or {}).get("csrf")
    if who.session is None or not shared.sessions.csrf_ok(who.session.id, given):
        return refusal(403, "log out from the page (its CSRF token is missing or wrong)")
    shared.book.end_session(who.session.id, now_ms())  # this process at once; the others through the topic
    try:
        await asyncio.to_thread(publish_end, shared, who.session)
    except Exception as error:  # noqa: BLE001 - the cookie goes anyway; other processes learn it at expiry
        log.warning("the logout of %s was not published (%s): other dashboard processes accept its cookie until "
                    "it expires", who.user, error)
    audit(shared, "logout", who.user, target=who.session.id[:8])
    response: Response = (Response('{"logged_out": true}', content_type="application/json") if wants_json
                          else redirect("/login", 303))
    response.delete_cookie(cookie_name(secure(request.scope)), path="/", secure=secure(request.scope),
                           httponly=True, samesite="Strict")
    return response


def publish_end(shared: State, session: Session) -> None:
    settings = shared.config.settings
    codec = AvroCodec(settings, settings.sessions_ended_topic, "session_end")
    accounts.publish(settings, settings.sessions_ended_topic, session.id,
                     codec.encode({"_id": session.id, "user": session.user, "ended": now_ms()}), timeout=10)


@auth.get("/auth/me")
async def me() -> dict[str, Any]:
    """Who the page is logged in as (the page's script shows it beside the logout button)."""
    who = principal()
    return {"user": who.user, "role": who.role, "via": who.via, "mode": mode(state(current_app)),
            "writes": who.may_write}


def install(app: Any) -> None:
    """The checks in front of every route (after the Host check, which webui/app.py registers first)."""
    app.before_request(check_request)
    app.before_websocket(check_websocket)
    app.after_request(renew_cookie)
    app.context_processor(template_context)
    app.register_blueprint(auth)


async def watch_session(shared: State, who: Principal, headers: Any, cookies: Any, scope: dict[str, Any],
                        every: float = 5.0) -> None:
    """An open WebSocket's task: returns when its principal may no longer go on (the socket is then closed)."""
    while True:
        await asyncio.sleep(every)
        if not still_valid(shared, who, headers, cookies, scope):
            return
