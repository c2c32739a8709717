"""Is it there? A process alive and what it runs, a port that answers, each stack component ready in its own protocol.

Every probe answers True or False and never raises: "not yet" is an answer while a component starts.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import requests

REQUIRED_PLUGINS = (
    "com.mongodb.kafka.connect.MongoSinkConnector",
    "io.apicurio.registry.utils.converter.AvroConverter",
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def cmdline(pid: int) -> list[str] | None:
    """The process's command line (argv), or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return [arg.decode(errors="replace") for arg in raw.split(b"\0")[:-1]] if raw else None


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str, check: Callable[[requests.Response], bool] = lambda r: True) -> bool:
    try:
        response = requests.get(url, timeout=2)
    except requests.RequestException:
        return False
    return response.ok and check(response)


def kafka_ready(port: int) -> bool:
    """The broker answers a metadata request."""
    if not port_open(port):
        return False
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=3)
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    return bool(metadata.brokers)


def registry_ready(port: int) -> bool:
    """The registry answers its Confluent-compatible API."""
    return http_ok(f"http://127.0.0.1:{port}/apis/ccompat/v7/subjects")


def connect_ready(port: int) -> bool:
    """Connect lists both plugins the pipeline needs."""

    def has_plugins(response: requests.Response) -> bool:
        classes = {p["class"] for p in response.json()}
        return all(c in classes for c in REQUIRED_PLUGINS)

    return http_ok(f"http://127.0.0.1:{port}/connector-plugins?connectorsOnly=false", has_plugins)


def ferretdb_ready(port: int) -> bool:
    """FerretDB answers `ping` through pymongo."""
    if not port_open(port):
        return False
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client = MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=2000)
    try:
        return client.admin.command("ping").get("ok") == 1
    except PyMongoError:
        return False
    finally:
        client.close()
