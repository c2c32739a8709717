"""`control users`, `control tokens`, `control audit`: the dashboard's accounts, API tokens and audit trail.

    control users add alice [--role admin|user|viewer]     the password is asked twice (or read from stdin)
    control users list | rm NAME | passwd NAME | role NAME ROLE
    control tokens add grafana --user alice [--scope read|write] [--expires 30d]   the token is shown once
    control tokens list | rm ID
    control audit [-n 50] [--user NAME] [--event login_failed]

Accounts and tokens are cryptopulse/accounts.py (kept in Kafka, stored by the accounts sink, followed by every
dashboard process); each change here is audited (cryptopulse/audit.py) as made by `control (<OS user>)`.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any, TextIO

from cryptopulse import accounts, audit
from cryptopulse.accounts import ApiToken, User
from cryptopulse.errors import ConfigError
from cryptopulse.settings import Settings
from cryptopulse.times import iso_utc, now_ms


def read_password(stdin: TextIO = sys.stdin, ask: Callable[[str], str] = getpass.getpass) -> str:
    """A new password: asked twice at a terminal; from a script, the first line of stdin (`echo ... | control users
    add`, or `--password-stdin` habits: nothing else is read)."""
    if not stdin.isatty():
        line = stdin.readline()
        if not line:
            raise ConfigError("no password on stdin: give it as the first line (or run this at a terminal)")
        return accounts.password(line.rstrip("\r\n"))
    first = accounts.password(ask("New password: "))
    if ask("Again: ") != first:
        raise ConfigError("the two passwords differ; nothing was changed")
    return first


def render_users(found: list[User]) -> str:
    if not found:
        return "no accounts: the dashboard is in local mode (control users add NAME --role admin to create one)"
    return "\n".join(f"{u.name:20} {u.role:7} created {iso_utc(u.created)}  changed {iso_utc(u.changed)}"
                     for u in found)


def render_tokens(found: list[ApiToken], now: int | None = None) -> str:
    if not found:
        return "no API tokens (control tokens add NAME --user U)"
    now = now_ms() if now is None else now
    lines = []
    for t in found:
        expires = "never expires" if t.expires is None else (
            f"expires {iso_utc(t.expires)}" if t.expires > now else f"EXPIRED {iso_utc(t.expires)}")
        lines.append(f"{t.id:9} {t.user:16} {t.scope:5} {t.name[:30]:30} created {iso_utc(t.created)}  {expires}")
    return "\n".join(lines)


def add_parsers(sub: Any, checked: Callable[[Callable[[str], Any], str], Callable[[str], Any]], parser_class: type
                ) -> None:
    """The `users`, `tokens` and `audit` commands (control/cli.py's parser)."""
    users_p = sub.add_parser("users", help="dashboard accounts: as soon as one exists, the dashboard needs a login")
    users_sub = users_p.add_subparsers(dest="action", required=True, parser_class=parser_class)
    add = users_sub.add_parser("add", help="a new account; the password is asked twice, or read from stdin")
    add.add_argument("name", type=checked(accounts.user_name, "name"))
    add.add_argument("--role", type=checked(accounts.role, "role"), default="user",
                     help="admin: sees and manages everything; user (default): its own rules and alerts; viewer: "
                          "sees its own, changes nothing")
    users_sub.add_parser("list", help="the accounts")
    rm = users_sub.add_parser("rm", help="remove an account (its sessions and tokens end at once)")
    rm.add_argument("name", type=checked(accounts.user_name, "name"))
    passwd = users_sub.add_parser("passwd", help="a new password (the account's sessions end)")
    passwd.add_argument("name", type=checked(accounts.user_name, "name"))
    role = users_sub.add_parser("role", help="change an account's role (its sessions end)")
    role.add_argument("name", type=checked(accounts.user_name, "name"))
    role.add_argument("role", type=checked(accounts.role, "role"))

    tokens_p = sub.add_parser("tokens", help="API tokens (Authorization: Bearer) for scripts and the history API")
    tokens_sub = tokens_p.add_subparsers(dest="action", required=True, parser_class=parser_class)
    tadd = tokens_sub.add_parser("add", help="a new token, shown once (only its hash is kept)")
    tadd.add_argument("name", help="what it is for: grafana, a backup script, ...")
    tadd.add_argument("--user", type=checked(accounts.user_name, "user"), required=True,
                      help="the account it acts as")
    tadd.add_argument("--scope", type=checked(accounts.scope, "scope"), default="read",
                      help="read (default: GET only) or write (also rules, as far as the account's role allows)")
    tadd.add_argument("--expires", type=checked(accounts.duration_ms, "expires"), default=None,
                      help="its lifetime, such as 30d or 12h (default: until removed)")
    tokens_sub.add_parser("list", help="the tokens (never their secret)")
    trm = tokens_sub.add_parser("rm", help="remove a token by its id")
    trm.add_argument("id", type=checked(accounts.token_id, "id"))

    audit_p = sub.add_parser("audit", help="the audit trail: logins, failed logins, changes (from MongoDB)")
    audit_p.add_argument("-n", type=int, default=50, help="how many events (the newest; default 50)")
    audit_p.add_argument("--user", default=None, help="only this account's (or name's, for failed logins)")
    audit_p.add_argument("--event", choices=audit.EVENTS, default=None, help="only this kind of event")


def run(args: argparse.Namespace, settings: Settings, stdin: TextIO = sys.stdin) -> int:
    if args.command == "audit":
        print(audit.render(audit.recent(settings, max(1, min(args.n, 10_000)), args.user, args.event)))
        return 0
    if args.command == "users":
        return _users(args, settings, stdin)
    return _tokens(args, settings)


def _users(args: argparse.Namespace, settings: Settings, stdin: TextIO) -> int:
    if args.action == "list":
        print(render_users(accounts.users(settings)))
    elif args.action == "add":
        if args.name in {u.name for u in accounts.users(settings)}:  # before asking for a password
            raise ConfigError(f"there is an account {args.name!r} already (control users passwd {args.name})")
        user = accounts.add_user(settings, args.name, args.role, read_password(stdin))
        audit.record(settings, "user_added", target=user.name, detail=f"role {user.role}")
        print(f"account {user.name} ({user.role}) added: the dashboard now asks every visitor to log in")
    elif args.action == "passwd":
        accounts.existing_user(settings, args.name)
        user = accounts.set_password(settings, args.name, read_password(stdin))
        audit.record(settings, "password_changed", target=user.name)
        print(f"password of {user.name} changed; its sessions are over")
    elif args.action == "role":
        user = accounts.set_role(settings, args.name, args.role)
        audit.record(settings, "role_changed", target=user.name, detail=f"role {user.role}")
        print(f"{user.name} is now {user.role}; its sessions are over")
    elif args.action == "rm":
        user, gone = accounts.remove_user(settings, args.name)
        audit.record(settings, "user_removed", target=user.name,
                     detail=f"and its tokens {', '.join(t.id for t in gone)}" if gone else None)
        left = accounts.users(settings)
        print(f"account {user.name} removed{f' with {len(gone)} token(s)' if gone else ''}"
              + ("" if left else "; no account is left: the dashboard is back in local mode (loopback only)"))
    return 0


def _tokens(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "list":
        print(render_tokens(accounts.tokens(settings)))
    elif args.action == "add":
        token, text = accounts.add_token(settings, args.name, args.user, args.scope, args.expires)
        audit.record(settings, "token_added", target=token.id, user=token.user,
                     detail=f"{token.name!r} scope {token.scope}")
        print(text)
        print(f"token {token.id} of {token.user} ({token.scope}"
              f"{'' if token.expires is None else ', expires ' + iso_utc(token.expires)}): shown once, keep it now; "
              "send it as `Authorization: Bearer <token>`", file=sys.stderr)
    elif args.action == "rm":
        token = accounts.remove_token(settings, args.id)
        audit.record(settings, "token_removed", target=token.id, user=token.user)
        print(f"token {token.id} ({token.name}) of {token.user} removed")
    return 0
