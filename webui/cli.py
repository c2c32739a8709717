"""`webui`: serve the dashboard with hypercorn (`--processes N`: N processes on one port, webui/workers.py), or copy
the npm front-end files into place (`webui vendor`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from cryptopulse import accounts
from cryptopulse.commands import Parser, port, positive_int, run_command, setup_logging
from cryptopulse.errors import ConfigError
from cryptopulse.settings import PROJECT_DIR
from webui.config import WebConfig
from webui.protocol import is_loopback

VENDOR_DIR = Path(__file__).resolve().parent / "static" / "vendor"
# (file in node_modules, name served under /static/vendor/)
VENDOR_FILES = [
    ("lightweight-charts/dist/lightweight-charts.standalone.production.js", "lightweight-charts.js"),
    ("lightweight-charts/LICENSE", "lightweight-charts.LICENSE.txt"),
]


def vendor(node_modules: Path = PROJECT_DIR / "node_modules") -> list[Path]:
    """Copy the chart library from node_modules (after `npm ci`) into webui/static/vendor: no CDN at run time."""
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    copied = []
    for source, name in VENDOR_FILES:
        path = node_modules / source
        if not path.exists():
            raise SystemExit(f"webui vendor: {path} is missing; run `npm ci` in {PROJECT_DIR} first")
        copied.append(Path(shutil.copyfile(path, VENDOR_DIR / name)))
    return copied


def vendored() -> bool:
    return all((VENDOR_DIR / name).exists() for _, name in VENDOR_FILES)


def check_exposure(host: str, config: WebConfig, count_accounts: Callable[[], int] | None = None) -> None:
    """Refuse, in one line, to serve beyond this machine without accounts (anyone who reaches the port would have
    every page, the API and, with WEBUI_ALERT_RULES_REMOTE, the rules): loopback, WEBUI_ALLOW_OPEN=1, or at least
    one account (`control users add`)."""
    if is_loopback(host) or config.allow_open:
        return
    if count_accounts is None:
        def count_accounts() -> int:
            return len(accounts.users(config.settings))
    try:
        found = count_accounts()
    except Exception as error:  # noqa: BLE001 - Kafka away: whether accounts exist cannot be told
        raise ConfigError(f"refusing to serve {host}: whether accounts exist cannot be told (Kafka at "
                          f"{config.settings.kafka_bootstrap} did not answer: {type(error).__name__}); start the stack "
                          "or serve 127.0.0.1") from None
    if not found:
        raise ConfigError(f"refusing to serve {host} without accounts (anyone who reaches it would get everything): "
                          "create one with `control users add NAME --role admin`, or serve 127.0.0.1 "
                          "(docs/security.md)")


def serve(host: str, port: int, worker_of: int = 0, ready_fd: int | None = None) -> int:
    """Serve the dashboard in this process. `worker_of` N > 0: as one of N workers of `webui serve --processes N`
    (its socket joins the port's others with SO_REUSEPORT, its socket caps are its share, `ready_fd` hears when it
    listens)."""
    from hypercorn.asyncio import serve as hypercorn_serve

    from webui.app import create_app
    from webui.guard import listening_socket, server_config
    from webui.state import state
    from webui.workers import tell_ready, worker_limits

    shares = worker_limits(WebConfig(start_consumer=False), worker_of) if worker_of else {}
    app = create_app(host=host, port=port, **shares)
    web = state(app).config
    # frames over 4 KiB, pings, read and TCP timeouts: enforced by the server (webui/guard.py, docs/security.md)
    sock = listening_socket(host, port, web, reuse_port=bool(worker_of))
    watched = sock.dup() if ready_fd is not None else None
    config = server_config(web, sock)
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ready = None if watched is None or ready_fd is None else asyncio.create_task(tell_ready(watched, ready_fd))
        await hypercorn_serve(app, config, shutdown_trigger=stop.wait)
        if ready is not None:
            ready.cancel()

    asyncio.run(main())
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("webui", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    setup_logging()
    defaults = WebConfig(start_consumer=False)
    p = Parser(prog="webui", description=__doc__)
    sub = p.add_subparsers(dest="command", parser_class=Parser)
    run = sub.add_parser("serve", help="serve the dashboard (the default)")
    for parser in (p, run):
        parser.add_argument("--host", default=defaults.host, help="bind address (WEBUI_HOST, default 127.0.0.1)")
        parser.add_argument("--port", type=port, default=defaults.port, help="port (WEBUI_PORT, default 8000)")
        parser.add_argument("--processes", type=positive_int, default=defaults.processes,
                            help="processes serving the port, each following the topic itself (WEBUI_PROCESSES, "
                                 "default 1: this process)")
        # a worker of `--processes N` (webui/workers.py): not for people
        parser.add_argument("--certfile", default=None, help="serve HTTPS with this certificate (PEM; WEBUI_CERTFILE)")
        parser.add_argument("--keyfile", default=None, help="... and this private key (PEM; WEBUI_KEYFILE)")
        parser.add_argument("--worker-of", type=positive_int, default=0, help=argparse.SUPPRESS)
        parser.add_argument("--parent", type=positive_int, default=0, help=argparse.SUPPRESS)
        parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    sub.add_parser("vendor", help="copy the chart library from node_modules into webui/static/vendor")
    args = p.parse_args(argv)
    if args.command == "vendor":
        for path in vendor():
            print(path)
        return 0
    for name, value in (("WEBUI_CERTFILE", args.certfile), ("WEBUI_KEYFILE", args.keyfile)):
        if value:
            if not Path(value).is_file():
                raise ConfigError(f"{value}: no such file (the PEM {'certificate' if 'CERT' in name else 'key'})")
            os.environ[name] = str(Path(value).resolve())  # read by every worker's WebConfig
    if bool(os.environ.get("WEBUI_CERTFILE")) != bool(os.environ.get("WEBUI_KEYFILE")):
        raise ConfigError("TLS needs both --certfile and --keyfile (WEBUI_CERTFILE, WEBUI_KEYFILE)")
    if args.worker_of:
        from webui.workers import follow_parent

        if args.parent:
            follow_parent(args.parent)
        return serve(args.host, args.port, args.worker_of, args.ready_fd)
    check_exposure(args.host, defaults)
    if not vendored():
        logging.getLogger("webui").warning("chart library missing: run `npm ci && webui vendor` (charts won't draw)")
    if args.processes > 1:
        from webui.workers import supervise

        return supervise(args.host, args.port, args.processes)
    return serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
