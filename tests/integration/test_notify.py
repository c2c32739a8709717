"""Alerts that reach people, on the real stack: `control channels` and `control alerts add --notify` → `streams
alerts` → crypto-alerts → `streams notify` (a subprocess) → real local receivers (tests/receivers.py: a webhook, an
ntfy server, the Telegram Bot API, an SMTP server with STARTTLS) — and the outcomes through the deliveries sink in
crypto_db.alert_deliveries, the given-up alerts on crypto-alerts-undelivered.

The acceptance of issue 20: every alert stored in the alerts collection reaches each of its channels — the
receivers saw every alert id and, counting distinct idempotency keys, each exactly once — through a kill -9 of the
notifier mid-delivery and a receiver down for 60 s; a channel answering 400 has its alerts dead-lettered with the
reason while the other channels get theirs; and no secret shows in a log, in `control`'s output or on a topic.
(Kafka killed while delivering: tests/faults/test_notify_faults.py.)

Each test has channels, symbols and consumer groups of its own, and removes its rules and channels at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptopulse import topics
from cryptopulse.avro import AvroCodec
from cryptopulse.settings import PROJECT_DIR
from cryptopulse.times import now_ms
from tests import children
from tests.fakes import Reply
from tests.integration.conftest import wait_for
from tests.integration.test_alerts import AlertsProcess, TickWriter, control, unique_symbol
from tests.namespace import PREFIX
from tests.receivers import Certificate, MailReceiver, Receiver

TOKEN = "424242:TEST-bot-token-for-cryptopulse"
SECRETS = {"TEST_HOOK_SECRET": "whsec-test-5f1d7e9c", "TEST_NTFY_TOKEN": "tk_test_ntfy_8a6b2c",
           "TEST_TG_TOKEN": TOKEN, "TEST_SMTP_PASSWORD": "smtp-test-pass-3e4f"}
SMTP_USER = "alerts@example.test"


def exactly(count: int, get):
    """For wait_for: what `get()` returns once it holds `count` things, else None."""
    found = get()
    return found if len(found) == count else None


def tag() -> str:
    return uuid.uuid4().hex[:6]


class Notifier:
    """`python -m streams.cli notify` as a subprocess (the secrets and the receivers' addresses in its environment),
    its log in a file."""

    def __init__(self, group: str, log: Path, env: dict[str, str], channels: list[str],
                 options: tuple[str, ...] = ()) -> None:
        self.group, self.log, self.env, self.channels, self.options = group, log, env, channels, options
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        started = self.log.read_text().count("): from ") if self.log.exists() else 0
        self.process = children.start([sys.executable, "-m", "streams.cli", "notify", "--group", self.group,
                                       *self.options], self.log, cwd=PROJECT_DIR,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        wait_for(lambda: self.log.read_text().count("): from ") >= started + len(self.channels)
                 or self.process.poll() is not None, 90, "the notifier's channels to start")
        wait_for(lambda: "assigned " in self.log.read_text() or self.process.poll() is not None, 90,
                 "the notifier's router to be assigned the alerts topic")
        assert self.process.poll() is None, children.tail(self.log)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return children.wait(self.process, 90)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(TOKEN)
    yield server
    server.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> Certificate:
    return Certificate.make(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def secrets_in_env(monkeypatch) -> dict[str, str]:
    """The channels' secrets in this process's environment: `control` (channels test) and every child see them."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return SECRETS


class Scenario:
    """Channels, a rule naming them, the alert processor and the notifier of one test; removed at the end."""

    def __init__(self, settings, tmp_path: Path, receiver: Receiver, env: dict[str, str] | None = None) -> None:
        self.settings, self.tmp_path, self.receiver = settings, tmp_path, receiver
        self.tag = tag()
        self.env = {"TELEGRAM_API_URL": receiver.url, "NOTIFY_RETRY_MAX_SECONDS": "4", **(env or {})}
        self.channels: list[str] = []
        self.rules: list[str] = []
        self.symbol = unique_symbol()
        self.alerts: AlertsProcess | None = None
        self.notifier: Notifier | None = None

    def channel(self, name: str, *args: str) -> str:
        full = f"{name}-{self.tag}"
        result = control("channels", "add", full, *args)
        assert result.returncode == 0, str(result)
        self.channels.append(full)
        return full

    def start(self, *channels: str, options: tuple[str, ...] = ()) -> str:
        """The alert processor, a rule above 100 notifying `channels`, the notifier; the rule's id."""
        self.alerts = AlertsProcess(f"{PREFIX}alerts-{self.tag}", self.tmp_path / "alerts.log")
        result = control("alerts", "add", self.symbol, "above", "100", "--notify", ",".join(channels))
        assert result.returncode == 0, str(result)
        rule = result.stdout.split()[1].rstrip(":")
        self.rules.append(rule)
        wait_for(lambda: f"rule {rule}:" in self.alerts.log.read_text(), 30, "the processor to learn the rule")
        self.notifier = Notifier(f"{PREFIX}notify-{self.tag}", self.tmp_path / "notify.log", self.env,
                                 list(channels), options)
        return rule

    def fire(self, crossings: int, start: int | None = None) -> int:
        """Ticks crossing above 100 `crossings` times: as many alerts. Returns the next tick's time."""
        t = start or now_ms()
        ticks = []
        for _ in range(crossings):
            ticks += [(t, 99.0), (t + 1000, 101.0)]
            t += 2000
        TickWriter(self.settings).publish(self.symbol, ticks)
        return t

    def stored(self, mongo, rule: str) -> set[str]:
        return {d["_id"] for d in mongo[self.settings.database]["alerts"].find({"rule_id": rule}, {"_id": 1})}

    def close(self) -> None:
        for process in (self.notifier, self.alerts):
            if process is not None:
                with contextlib.suppress(Exception):
                    process.stop(signal.SIGTERM) if isinstance(process, AlertsProcess) else process.stop()
        for rule in self.rules:
            control("alerts", "rm", rule)
        for name in self.channels:
            control("channels", "rm", name)


@pytest.fixture
def scenario(settings, tmp_path, receiver) -> Iterator[Scenario]:
    made = Scenario(settings, tmp_path, receiver)
    yield made
    made.close()


def undelivered(settings, key_prefix: str) -> list[dict]:
    """The given-up alerts of one channel: key, headers, and the alert decoded."""
    codec = AvroCodec(settings, settings.alerts_topic, "alert")
    found = []
    for message in topics.read_to_end(settings, settings.alerts_undelivered_topic):
        key = message.key().decode()
        if key.startswith(key_prefix):
            headers = {name: value.decode() for name, value in message.headers() or []}
            found.append({"key": key, "headers": headers, "alert": codec.decode(message.value())})
    return found


def outcomes(mongo, settings, rule: str, channel: str) -> list[dict]:
    return list(mongo[settings.database]["alert_deliveries"].find({"rule_id": rule, "channel": channel}).sort("at"))


def test_every_alert_reaches_every_channel_once_through_a_kill_of_the_notifier(
        settings, mongo, tmp_path, receiver, certificate, secrets_in_env, monkeypatch):
    monkeypatch.setenv("TELEGRAM_API_URL", receiver.url)  # for `control channels test`
    mail = MailReceiver(certificate, SMTP_USER, SECRETS["TEST_SMTP_PASSWORD"])
    scenario = Scenario(settings, tmp_path, receiver, {"SSL_CERT_FILE": str(certificate.cert)})
    try:
        hook = scenario.channel("hook", "webhook", f"{receiver.url}/hook/a", "--secret-env", "TEST_HOOK_SECRET")
        phone = scenario.channel("phone", "ntfy", f"{receiver.url}/ntfy/btc-{scenario.tag}",
                                 "--token-env", "TEST_NTFY_TOKEN")
        bot = scenario.channel("bot", "telegram", "--token-env", "TEST_TG_TOKEN", "--chat", "-1001234567890")
        email = scenario.channel("mail", "email", "alice@example.test", "--smtp", mail.url,
                                 "--password-env", "TEST_SMTP_PASSWORD")
        rule = scenario.start(hook, phone, bot, email)
        receiver.slow("/", 0.4)  # every HTTP delivery takes a while: the kill lands in the middle of one
        scenario.fire(12)
        wait_for(lambda: len(receiver.delivered_keys("/hook/a")) >= 4, 60, "the first webhook deliveries")
        scenario.notifier.kill()
        in_flight = [s for s in receiver.requests() if s.status is None]
        scenario.notifier.start()
        receiver.slow("/", 0)
        stored = wait_for(lambda: exactly(12, lambda: scenario.stored(mongo, rule)), 60,
                          "the 12 alerts in crypto_db.alerts")
        receivers = {hook: lambda: receiver.delivered_keys("/hook/a"),
                     phone: lambda: receiver.delivered_keys(f"/ntfy/btc-{scenario.tag}"),
                     bot: lambda: receiver.delivered_keys("/bot"), email: mail.message_ids}
        for name, keys in receivers.items():
            wait_for(lambda keys=keys: set(keys()) >= stored, 90, f"every alert at {name}")
        time.sleep(2)  # anything sent twice would have come by now
        resent = {}
        for name, keys in receivers.items():
            seen = keys()
            assert set(seen) == stored, f"{name} saw {set(seen) ^ stored} beyond or short of the stored alerts"
            resent[name] = len(seen) - len(set(seen))
        print(f"\n12 alerts to 4 channels through a kill -9 ({len(in_flight)} request(s) in flight at the kill): "
              f"resent with the same key {resent}")
        # a channel sends one alert at a time: at the kill, at most one was sent and not recorded as acknowledged
        assert all(count <= 1 for count in resent.values()), "only what was not recorded as acknowledged is resent"
        for seen in receiver.requests("/hook/a"):
            digest = hmac.new(SECRETS["TEST_HOOK_SECRET"].encode(), seen.body, hashlib.sha256).hexdigest()
            assert seen.headers["X-CryptoPulse-Signature"] == f"sha256={digest}"
        # every outcome is in the store: one `delivered` per (alert, channel) at least
        for name in receivers:
            wait_for(lambda name=name: {d["alert_id"] for d in outcomes(mongo, settings, rule, name)
                                        if d["outcome"] == "delivered"} == stored, 60, f"{name}'s outcomes stored")
        listed = control("alerts", "deliveries", "--rule", rule, "-n", "100")
        assert listed.returncode == 0 and listed.stdout.count(": delivered") == 48, str(listed)
        assert undelivered(settings, f"{hook}|") == []
        assert scenario.notifier.stop() == 0
        # no secret anywhere a person or a topic sees
        shown = [scenario.notifier.log.read_text(), listed.stdout, control("channels", "list").stdout,
                 control("channels", "test", bot).stdout]
        for topic in (settings.alert_channels_topic, settings.alert_deliveries_topic, settings.alert_rules_topic,
                      settings.alerts_topic):
            tail = control("topics", "tail", topic, "--from-beginning", "-n", "500")
            assert tail.returncode == 0, str(tail)
            shown.append(tail.stdout)
        for value in SECRETS.values():
            assert not any(value in text for text in shown), "a secret was shown"
        assert "bot token from $TEST_TG_TOKEN" in shown[2]
    finally:
        scenario.close()
        mail.close()


def test_a_receiver_down_for_60_s_gets_every_alert_once_it_is_back(settings, mongo, scenario, receiver):
    hook = scenario.channel("hook", "webhook", f"{receiver.url}/hook/down")
    phone = scenario.channel("phone", "ntfy", f"{receiver.url}/ntfy/down-{scenario.tag}")
    rule = scenario.start(hook, phone)
    receiver.stop()
    went = time.monotonic()
    scenario.fire(5)
    stored = wait_for(lambda: exactly(5, lambda: scenario.stored(mongo, rule)), 60,
                      "the 5 alerts in crypto_db.alerts")
    time.sleep(max(0.0, 60 - (time.monotonic() - went)))
    receiver.start()
    back = time.monotonic()
    for prefix in ("/hook/down", f"/ntfy/down-{scenario.tag}"):
        wait_for(lambda prefix=prefix: set(receiver.delivered_keys(prefix)) >= stored, 60, f"every alert at {prefix}")
    print(f"\nreceiver down 60 s: 5 alerts on 2 channels, all delivered {time.monotonic() - back:.1f} s after it "
          "came back")
    time.sleep(2)
    for prefix in ("/hook/down", f"/ntfy/down-{scenario.tag}"):
        keys = receiver.delivered_keys(prefix)
        assert sorted(keys) == sorted(stored), f"{prefix}: each alert once"
    # in order per channel: the first delivery of each alert in the order they fired
    assert receiver.delivered_keys("/hook/down") == sorted(stored, key=lambda k: int(k.rsplit("|", 1)[1]))
    retrying = wait_for(lambda: [d for d in outcomes(mongo, settings, rule, hook) if d["outcome"] == "retrying"],
                        60, "the retries in the store")
    assert all(d["status"] is None and "Connection refused" in d["reason"] for d in retrying)
    assert undelivered(settings, f"{hook}|") == []
    # control status shows how far behind the alerts each channel is: nothing left once all is delivered (the end
    # offset counts the last transaction's commit marker, which no consumer reads: 1, as for the alerts sink)
    status = children.run(["control", "status", "--json"], timeout=120,
                          env={**os.environ, "NOTIFY_GROUP": scenario.notifier.group})  # the test's notifier
    assert status.returncode == 0, str(status)
    lag = {row["group"]: row["lag"] for row in json.loads(status.stdout)["lag"]
           if row["topic"] == settings.alerts_topic}
    mine = {group: behind for group, behind in lag.items() if group.startswith(f"{scenario.notifier.group}.")}
    assert {group.split(".")[1] for group in mine} == {hook, phone} and set(mine.values()) <= {0, 1}, lag


def test_a_channel_answering_400_dead_letters_its_alerts_and_a_hung_one_holds_up_no_other(
        settings, mongo, scenario, receiver):
    good = scenario.channel("good", "webhook", f"{receiver.url}/hook/good")
    bad = scenario.channel("bad", "webhook", f"{receiver.url}/hook/bad")
    hung = scenario.channel("hung", "webhook", f"{receiver.url}/hook/hung")
    receiver.refuse("/hook/bad", 400, {"error": "unknown field 'alert'"})
    receiver.hang("/hook/hung")
    rule = scenario.start(good, bad, hung, options=("--timeout-seconds", "30"))
    scenario.fire(4)
    stored = wait_for(lambda: exactly(4, lambda: scenario.stored(mongo, rule)), 60,
                      "the 4 alerts in crypto_db.alerts")
    wait_for(lambda: set(receiver.delivered_keys("/hook/good")) == stored, 60, "every alert at the good channel")
    # the hung channel is still waiting for its first answer: it held up nothing
    assert len(receiver.requests("/hook/hung")) == 1 and receiver.requests("/hook/hung")[0].status is None
    dead = wait_for(lambda: exactly(4, lambda: undelivered(settings, f"{bad}|")), 60,
                    "the bad channel's 4 alerts on the dead-letter topic")
    assert {d["alert"]["_id"] for d in dead} == stored
    for letter in dead:
        headers = letter["headers"]
        assert headers["cryptopulse.notify.channel"] == bad and headers["cryptopulse.notify.status"] == "400"
        assert headers["cryptopulse.notify.reason"] == "refused: 400 {\"error\": \"unknown field 'alert'\"}"
    wait_for(lambda: len([d for d in outcomes(mongo, settings, rule, bad) if d["outcome"] == "dead-lettered"]) == 4,
             60, "the dead-lettered outcomes in the store")
    receiver.release()
    wait_for(lambda: set(receiver.delivered_keys("/hook/hung")) == stored, 120, "the hung channel, released")


def test_retries_honour_retry_after_and_give_up_past_the_bound(settings, mongo, scenario, receiver):
    slow = scenario.channel("slow", "webhook", f"{receiver.url}/hook/slow")
    gone = scenario.channel("gone", "webhook", "http://127.0.0.1:9/hook/nobody-listens")
    receiver.cue("/hook/slow", Reply(500, "boom"), Reply(429, "slow down", {"Retry-After": "3"}),
                 Reply(503, "busy", {"Retry-After": "1"}))
    rule = scenario.start(slow, gone, options=("--give-up-hours", "0.003"))  # 10.8 s
    scenario.fire(1)
    (key,) = wait_for(lambda: receiver.delivered_keys("/hook/slow"), 60, "the alert, after three refusals")
    attempts = receiver.requests("/hook/slow")
    assert [a.status for a in attempts] == [500, 429, 503, 200] and {a.key for a in attempts} == {key}
    assert attempts[2].at - attempts[1].at >= 3.0 and attempts[3].at - attempts[2].at >= 1.0
    stored = wait_for(lambda: [d for d in outcomes(mongo, settings, rule, slow)], 60, "the outcomes")
    wait_for(lambda: [d["outcome"] for d in outcomes(mongo, settings, rule, slow)] == [
        "retrying", "retrying", "retrying", "delivered"], 60, "every outcome of the slow channel")
    stored = outcomes(mongo, settings, rule, slow)
    assert [d["status"] for d in stored] == [500, 429, 503, 200]
    # nobody listening: retried until the bound, then given up with the reason
    (letter,) = wait_for(lambda: undelivered(settings, f"{gone}|"), 60, "the unreachable channel's dead letter")
    assert letter["headers"]["cryptopulse.notify.reason"].startswith("still failing 0.003 h after it was fired")
    assert "Connection refused" in letter["headers"]["cryptopulse.notify.reason"]
    # the next alert is past nothing: it is tried (and fails) before it is given up in its turn
    scenario.fire(1, start=now_ms() + 10_000)
    wait_for(lambda: len(undelivered(settings, f"{gone}|")) == 2, 60, "the second alert given up too")


def test_beyond_the_cap_one_summary_instead_of_a_flood(settings, mongo, scenario, receiver):
    hook = scenario.channel("capped", "webhook", f"{receiver.url}/hook/capped")
    rule = scenario.start(hook, options=("--cap-per-minute", "3"))
    scenario.fire(8)
    stored = wait_for(lambda: exactly(8, lambda: scenario.stored(mongo, rule)), 60,
                      "the 8 alerts in crypto_db.alerts")
    wait_for(lambda: len(receiver.delivered_keys("/hook/capped")) == 4, 90, "3 alerts and one summary")
    requests = receiver.requests("/hook/capped")
    bodies = [r.json() for r in requests]
    assert [b["type"] for b in bodies] == ["alert", "alert", "alert", "summary"]
    summary = bodies[3]
    assert summary["count"] == 5 and summary["id"].startswith("summary-")
    assert {b["id"] for b in bodies[:3]} | {a["id"] for a in summary["alerts"]} == stored
    assert requests[3].at - requests[2].at >= 55  # a minute after the first alert held back
    held = {a["id"] for a in summary["alerts"]}
    # each summarized alert's outcome, all five (the sink writes them in batches: the first alone ended the wait)
    wait_for(lambda: {d["alert_id"] for d in outcomes(mongo, settings, rule, hook) if d.get("summary")} == held, 60,
             "every summarized alert's outcome")


def test_control_channels_add_list_test_rm(settings, receiver, secrets_in_env):
    name = f"ops-{tag()}"
    added = control("channels", "add", name, "webhook", f"{receiver.url}/hook/ops", "--secret-env", "TEST_HOOK_SECRET")
    assert added.returncode == 0 and "signing secret from $TEST_HOOK_SECRET" in added.stdout, str(added)
    again = control("channels", "add", name, "ntfy", f"{receiver.url}/ntfy/x")
    assert again.returncode == 2 and "exists" in again.stderr
    bad = control("channels", "add", f"x-{tag()}", "telegram", "--chat", "42")
    assert bad.returncode == 2 and "bot token with --token-env" in bad.stderr
    wrong = control("channels", "add", f"x-{tag()}", "webhook", f"{receiver.url}/h", "--password-env", "X")
    assert wrong.returncode == 2 and "--password-env is not for this kind" in wrong.stderr
    tested = control("channels", "test", name)
    assert tested.returncode == 0 and "delivered; the receiver answered: 200" in tested.stdout, str(tested)
    assert receiver.requests("/hook/ops")[0].json()["type"] == "test"
    receiver.refuse("/hook/ops", 410, {"error": "gone"})
    refused = control("channels", "test", name)
    assert refused.returncode == 1 and "REFUSED; the receiver answered: 410" in refused.stdout
    symbol = unique_symbol()
    unknown = control("alerts", "add", symbol, "above", "1", "--notify", f"{name},nosuch-{tag()}")
    assert unknown.returncode == 2 and "no channel nosuch-" in unknown.stderr
    rule_add = control("alerts", "add", symbol, "above", "1", "--notify", name)
    assert rule_add.returncode == 0 and f"notify {name}" in rule_add.stdout
    rule = rule_add.stdout.split()[1].rstrip(":")
    listed = control("channels", "list")
    assert f"rules {rule})" in next(line for line in listed.stdout.splitlines() if line.startswith(name))
    in_use = control("channels", "rm", name)
    assert in_use.returncode == 2 and f"rules {rule} notify {name}" in in_use.stderr
    assert control("alerts", "rm", rule).returncode == 0
    unset = control("channels", "add", f"tg-{tag()}", "telegram", "--token-env", "TEST_NOT_SET_ANYWHERE",
                    "--chat", "42")
    assert unset.returncode == 0 and "note: TEST_NOT_SET_ANYWHERE is not set in this shell" in unset.stderr
    assert control("channels", "rm", unset.stdout.split()[1].rstrip(":")).returncode == 0
    removed = control("channels", "rm", name)
    assert removed.returncode == 0 and f"channel {name} removed" in removed.stdout
    assert name not in control("channels", "list").stdout
    for text in (added.stdout, tested.stdout, listed.stdout):
        assert SECRETS["TEST_HOOK_SECRET"] not in text
    # both changes are in the audit trail (issue 21), through the accounts sink into MongoDB
    wait_for(lambda: all(any(kind in line and f"target={name}" in line and "via=control" in line
                             for line in control("audit", "-n", "500").stdout.splitlines())
                         for kind in ("channel_added  ", "channel_removed")), 60,
             f"channel {name}'s addition and removal in `control audit`")


def test_an_alert_naming_no_channel_is_given_up_for_it(settings, scenario, receiver):
    """An alert whose channel was removed before it was delivered (here: published naming a channel that never
    existed) goes to the dead-letter topic with the reason; its other channels get it."""
    hook = scenario.channel("real", "webhook", f"{receiver.url}/hook/real")
    scenario.start(hook)
    ghost = f"ghost-{scenario.tag}"
    alert = {"_id": f"feed|{scenario.symbol}|simulated|{now_ms()}", "rule_id": "feed", "symbol": scenario.symbol,
             "source": "simulated", "kind": "above", "direction": "up", "threshold": 1.0, "minutes": None,
             "price": 2.0, "ts": now_ms(), "reference_price": None, "reference_ts": None, "change_pct": None,
             "message": "hand-made", "fired_at": now_ms(), "tick_published_at": None, "channels": [hook, ghost]}
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(settings.alerts_topic, key=alert["_id"].encode(),
                     value=AvroCodec(settings, settings.alerts_topic, "alert").encode(alert))
    assert producer.flush(30) == 0
    wait_for(lambda: receiver.delivered_keys("/hook/real") == [alert["_id"]], 60, "the real channel's delivery")
    (letter,) = wait_for(lambda: undelivered(settings, f"{ghost}|"), 60, "the ghost channel's dead letter")
    assert letter["alert"]["_id"] == alert["_id"]
    assert letter["headers"]["cryptopulse.notify.reason"].startswith(f"no channel '{ghost}'")


def test_the_page_offers_the_channels_and_lists_each_alerts_deliveries(settings, mongo, scenario, receiver):
    import asyncio

    from webui.app import create_app

    hook = scenario.channel("page", "webhook", f"{receiver.url}/hook/page")
    rule = scenario.start(hook)
    scenario.fire(2)
    stored = wait_for(lambda: exactly(2, lambda: scenario.stored(mongo, rule)), 60, "the 2 alerts in the store")
    wait_for(lambda: {d["alert_id"] for d in outcomes(mongo, settings, rule, hook)} == stored, 60,
             "their outcomes in the store")
    local = {"client": ("127.0.0.1", 50000)}
    page = {"Origin": "http://localhost:8000", "Host": "localhost:8000"}

    async def scenario_() -> dict:
        app = create_app(settings, symbols=("BTC",), views=False, probe_seconds=0)
        seen = {}
        async with app.test_app() as test_app:
            client = test_app.test_client()
            deadline = time.monotonic() + 30
            while True:  # the feed reads the last alerts from the store when it starts
                recent = await (await client.get("/alerts/recent")).get_json()
                mine = [a for a in recent["alerts"] if a["rule_id"] == rule]
                if len(mine) == 2 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            seen["recent"] = mine
            seen["rules"] = await (await client.get("/alerts/rules", scope_base=local)).get_json()
            added = await client.post("/alerts/rules", json={"symbol": scenario.symbol, "condition": "below",
                                                             "value": 50, "notify": [hook]},
                                      headers=page, scope_base=local)
            seen["add"] = (added.status_code, await added.get_json())
            unknown = await client.post("/alerts/rules", json={"symbol": scenario.symbol, "condition": "below",
                                                               "value": 50, "notify": [f"nosuch-{scenario.tag}"]},
                                        headers=page, scope_base=local)
            seen["unknown"] = (unknown.status_code, await unknown.get_json())
        return seen

    seen = asyncio.run(scenario_())
    assert {a["id"] for a in seen["recent"]} == stored
    for alert in seen["recent"]:
        assert alert["channels"] == [hook]
        assert alert["deliveries"][hook]["outcome"] == "delivered" and alert["deliveries"][hook]["status"] == 200
    assert {"name": hook, "kind": "webhook"} in seen["rules"]["channels"]
    assert not any(receiver.url in str(c) for c in seen["rules"]["channels"]), "a channel's address is not shown"
    status, body = seen["add"]
    assert status == 201 and body["rule"]["channels"] == [hook], body
    scenario.rules.append(body["rule"]["id"])
    status, body = seen["unknown"]
    assert status == 400 and f"no channel nosuch-{scenario.tag}" in body["error"]


def test_a_second_notifier_of_the_same_group_fences_the_first(settings, mongo, scenario, receiver, tmp_path):
    """One process per group: the newer one's transactional ids fence the older one's, which exits 1 (the demo's
    `keep` or compose would start it again, and it would fence the other in turn) — alerts still arrive, at least
    once, with their key."""
    hook = scenario.channel("fenced", "webhook", f"{receiver.url}/hook/fenced")
    rule = scenario.start(hook)
    first = scenario.notifier
    second = Notifier(first.group, tmp_path / "notify-2.log", scenario.env, [hook])
    scenario.fire(2)
    stored = wait_for(lambda: exactly(2, lambda: scenario.stored(mongo, rule)), 60, "the 2 alerts stored")
    wait_for(lambda: set(receiver.delivered_keys("/hook/fenced")) >= stored, 60, "both alerts delivered")
    code = first.process.wait(60)
    assert code == 1 and "stopped" in first.log.read_text()
    assert second.process.poll() is None
    second.stop()
