"""Issue 22, item 5, against the real server (`webui serve`: hypercorn and the app, tests/security/stub_dashboard.py):

- a rule's body limit held only for a body that said its length: 10 KB sent chunked was read and parsed;
- request heads were limited to 16 KiB (`h11_max_incomplete_size`) only when they arrived in pieces: a head of
  ~40 KiB sent at once was served;
- the rules' 503 told any client the error's text, with the address of what did not answer;
- TLS: `webui --certfile --keyfile` serves HTTPS, and its session cookie is Secure.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time

import requests

RULE = b'{"symbol": "BTC", "condition": "above", "value": 70000, "source": "' + b"x" * 10_000 + b'"}'


def exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes in one write, read the answer until the server closes or it is complete enough."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_a_chunked_rule_over_the_limit_is_refused_413(dashboard):
    board = dashboard()
    chunked = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n"
                       for part in (RULE[i:i + 1000] for i in range(0, len(RULE), 1000))) + b"0\r\n\r\n"
    answer = exchange(board.port, b"POST /alerts/rules HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                                  b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    assert status(answer) == 413, answer[:300]
    said = exchange(board.port, b"POST /alerts/rules HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                                b"\r\nContent-Length: " + str(len(RULE)).encode() + b"\r\n\r\n" + RULE)
    assert status(said) == 413


def test_a_request_head_over_16_kib_is_refused_even_when_it_arrives_whole(dashboard):
    board = dashboard()
    big = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 40_000 + b"\r\n\r\n"
    assert status(exchange(board.port, big)) == 431
    small = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 8_000 + b"\r\nConnection: close\r\n\r\n"
    assert status(exchange(board.port, small)) == 200


def test_the_rules_503_names_no_address(dashboard):
    board = dashboard(SCHEMA_REGISTRY_URL="http://registry.internal.example:18081/apis/ccompat/v7")
    answer = requests.get(f"{board.http}/alerts/rules", timeout=60)
    assert answer.status_code == 503
    body = answer.text
    for secret in ("127.0.0.1:1", "registry.internal.example", "://", "18081"):
        assert secret not in body, body


def test_tls_serves_https_with_a_secure_session_cookie(dashboard, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    board = dashboard(WEBUI_CERTFILE=str(cert), WEBUI_KEYFILE=str(key), WEBUI_AUTH="on",
                      WEBUI_SECRET_FILE=str(tmp_path / "secret"), check="https")
    context = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", board.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert status(answer) == 200
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert "set-cookie: cryptopulse_login=" in head and "; secure" in head
