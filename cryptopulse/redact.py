"""Credentials out of what is printed: a connection string is shown with its password (and any secret-looking
query parameter) replaced, so `control status`, error messages and CI logs never carry them."""

from __future__ import annotations

import re

HIDDEN = "***"
# query parameters whose values are secrets in the URIs the project meets (MongoDB, HTTP APIs)
SECRET_PARAMS = re.compile(r"(?i)^(password|passwd|pwd|secret|token|api[_-]?key|key|access[_-]?token|sig|signature"
                           r"|authmechanismproperties|tlscertificatekeyfilepassword)$")
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#]*)@")


def redact(uri: str) -> str:
    """`uri` fit to print: `mongodb://app:s3cret@db:27017/?tls=true&password=x` ->
    `mongodb://app:***@db:27017/?tls=true&password=***`. A string without credentials is returned as it is."""
    text = str(uri)
    found = _USERINFO.match(text)
    if found:
        user, colon, _ = found.group("userinfo").partition(":")
        shown = f"{user}:{HIDDEN}" if colon else HIDDEN  # a user alone may be a token (https://TOKEN@host)
        text = found.group("scheme") + shown + "@" + text[found.end():]
    base, question, query = text.partition("?")
    if not question:
        return text
    query, hash_, fragment = query.partition("#")
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        parts.append(f"{name}={HIDDEN}" if equals and SECRET_PARAMS.match(name) else part)
    return f"{base}?{'&'.join(parts)}{hash_}{fragment}"
