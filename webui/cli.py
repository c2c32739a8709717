"""`webui`: serve the dashboard with hypercorn, or copy the npm front-end files into place (`webui vendor`)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
from pathlib import Path

from cryptopulse.commands import Parser, port, run_command, setup_logging
from cryptopulse.settings import PROJECT_DIR
from webui.config import WebConfig

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


def serve(host: str, port: int) -> int:
    from hypercorn.asyncio import serve as hypercorn_serve

    from webui.app import create_app
    from webui.guard import listening_socket, server_config
    from webui.state import state

    if not vendored():
        logging.getLogger("webui").warning("chart library missing: run `npm ci && webui vendor` (charts won't draw)")
    app = create_app(host=host, port=port)
    web = state(app).config
    # frames over 4 KiB, pings, read and TCP timeouts: enforced by the server (webui/guard.py, docs/security.md)
    config = server_config(web, listening_socket(host, port, web))
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await hypercorn_serve(app, config, shutdown_trigger=stop.wait)

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
    sub.add_parser("vendor", help="copy the chart library from node_modules into webui/static/vendor")
    args = p.parse_args(argv)
    if args.command == "vendor":
        for path in vendor():
            print(path)
        return 0
    return serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
