"""Every page names its icon, and /favicon.ico (what a browser asks for when a page names none, and what it asks of
the JSON endpoints) answers it: no 404 in the browser's console."""

from __future__ import annotations

import asyncio
import re

from werkzeug.datastructures import Headers

from cryptopulse.settings import Settings
from webui.app import create_app

PAGES = ("/", "/markets", "/chart?symbol=ETH")


def fetch(*paths: str) -> list[tuple[int, Headers, str]]:
    async def scenario() -> list[tuple[int, Headers, str]]:
        app = create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"),
                         start_consumer=False, views=False, probe_seconds=0, symbols=("BTC", "ETH"))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            answers = []
            for path in paths:
                response = await client.get(path)
                answers.append((response.status_code, response.headers, await response.get_data(as_text=True)))
            return answers

    return asyncio.run(scenario())


def test_every_page_links_its_icon_and_the_icon_is_an_svg_of_the_apps_own():
    links = set()
    for status, _, html in fetch(*PAGES):
        assert status == 200
        link = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', html)
        assert link, "no <link rel=icon> on the page"
        links.add(link.group(1))
    assert len(links) == 1
    ((status, headers, svg),) = fetch(links.pop())
    assert status == 200 and headers["Content-Type"].startswith("image/svg+xml")
    assert svg.lstrip().startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in svg
    # an image of its own: nothing the Content-Security-Policy would refuse, nothing fetched from elsewhere
    assert not re.search(r"<script|<style|style=|href=|url\(", svg)


def test_favicon_ico_answers_the_icon():
    ((status, headers, body), (_, _, linked)) = fetch("/favicon.ico", "/static/favicon.svg")
    assert status == 200 and headers["Content-Type"].startswith("image/svg+xml") and body == linked
    assert "Content-Security-Policy" in headers and headers["X-Content-Type-Options"] == "nosniff"
