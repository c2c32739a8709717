"""Each channel's sender against a real local receiver (tests/receivers.py): what it sends, and how it reads what
the receiver answered — taken, worth retrying (and when), or refused for good. No Kafka here."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from cryptopulse.channel import Channel
from cryptopulse.secrets import Scrubber
from streams.senders import SIGNATURE_HEADER, alert_notice, message_id, sender_for, summary_notice, trial_notice
from tests.fakes import Reply
from tests.receivers import Certificate, MailReceiver, Receiver

T0 = 1_767_000_000_000
TOKEN = "123456:TEST-token-not-real"
ALERT = {"_id": "r1|BTC|binance|1767000000000", "rule_id": "r1", "symbol": "BTC", "source": "binance",
         "kind": "above", "direction": "up", "threshold": 70000.0, "minutes": None, "price": 70123.4, "ts": T0,
         "reference_price": 69990.0, "reference_ts": T0 - 1000, "change_pct": None,
         "message": "BTC crossed above 70,000: 70,123.40 (binance)", "fired_at": T0 + 5, "channels": ["x"]}


@pytest.fixture
def receiver():
    server = Receiver(TOKEN)
    yield server
    server.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return Certificate.make(tmp_path_factory.mktemp("tls"))


def test_a_webhook_gets_signed_json_with_the_alerts_id_as_idempotency_key(receiver, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "whsec-0123456789")
    scrubber = Scrubber()
    channel = Channel("ops", "webhook", f"{receiver.url}/hook/ops", "env:HOOK_SECRET", created=T0)
    answer = sender_for(channel, scrubber=scrubber).send(alert_notice(ALERT))
    assert answer.ok and answer.status == 200
    (seen,) = receiver.requests("/hook/ops")
    body = seen.json()
    assert seen.key == ALERT["_id"] and body["id"] == ALERT["_id"] and body["type"] == "alert"
    assert body["alert"]["price"] == 70123.4 and body["alert"]["ts"] == T0 and body["channel"] == "ops"
    expected = hmac.new(b"whsec-0123456789", seen.body, hashlib.sha256).hexdigest()
    assert seen.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    # the same bytes, so the same signature, at every attempt
    sender_for(channel, scrubber=scrubber).send(alert_notice(ALERT))
    assert receiver.requests("/hook/ops")[1].body == seen.body


def test_an_unsigned_webhook_has_no_signature_and_a_placeholder_is_filled(receiver, monkeypatch):
    monkeypatch.setenv("HOOK_PATH", "p4th-secret-part")
    channel = Channel("ops", "webhook", f"{receiver.url}/hook/${{HOOK_PATH}}", created=T0)
    assert sender_for(channel, scrubber=Scrubber()).send(alert_notice(ALERT)).ok
    (seen,) = receiver.requests("/hook/p4th-secret-part")
    assert SIGNATURE_HEADER not in seen.headers


def test_ntfy_gets_the_line_with_its_title_tags_priority_and_token(receiver, monkeypatch):
    monkeypatch.setenv("NTFY_TOKEN", "tk_abcdefghijkl")
    channel = Channel("phone", "ntfy", f"{receiver.url}/ntfy/btc-alerts", "env:NTFY_TOKEN", created=T0)
    answer = sender_for(channel, scrubber=Scrubber()).send(alert_notice(ALERT))
    assert answer.ok and '"event": "message"' in answer.text
    (seen,) = receiver.requests("/ntfy/btc-alerts")
    assert seen.body.decode() == ALERT["message"]
    assert seen.headers["Title"] == "CryptoPulse: BTC" and seen.headers["Tags"] == "chart_with_upwards_trend"
    assert seen.headers["Priority"] == "high" and seen.headers["Authorization"] == "Bearer tk_abcdefghijkl"
    assert seen.key == ALERT["_id"]


def test_telegram_gets_send_message_and_its_token_never_shows(receiver, monkeypatch):
    monkeypatch.setenv("TG_TOKEN", TOKEN)
    scrubber = Scrubber()
    channel = Channel("me", "telegram", "-1001234567890", "env:TG_TOKEN", created=T0)
    sender = sender_for(channel, telegram_api=receiver.url, scrubber=scrubber)
    answer = sender.send(alert_notice(ALERT))
    assert answer.ok and answer.text.startswith("message_id ")
    (seen,) = receiver.requests(f"/bot{TOKEN}/sendMessage")
    assert seen.json()["chat_id"] == "-1001234567890" and ALERT["message"] in seen.json()["text"]
    # a wrong token: refused for good, and the answer names no token
    monkeypatch.setenv("TG_TOKEN", "999:WRONG-token-value")
    refused = sender.send(alert_notice(ALERT))
    assert refused.permanent and refused.status == 401 and refused.text == "Unauthorized"
    # the receiver gone: a connection failure, worth retrying, whose reason is not the URL
    receiver.stop()
    down = sender.send(alert_notice(ALERT))
    assert not down.ok and not down.permanent and down.status is None
    assert "Connection refused" in down.text and "WRONG" not in down.text and TOKEN not in down.text


def test_telegram_429_says_when_to_retry_in_its_body(receiver, monkeypatch):
    monkeypatch.setenv("TG_TOKEN", TOKEN)
    receiver.cue("/bot", Reply(429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 3",
                                     "parameters": {"retry_after": 3}}))
    channel = Channel("me", "telegram", "42", "env:TG_TOKEN", created=T0)
    answer = sender_for(channel, telegram_api=receiver.url, scrubber=Scrubber()).send(alert_notice(ALERT))
    assert (answer.ok, answer.permanent, answer.status, answer.retry_after) == (False, False, 429, 3.0)
    assert answer.text == "Too Many Requests: retry after 3"


@pytest.mark.parametrize(("reply", "ok", "permanent", "retry_after"), [
    (Reply(201, {"id": 1}), True, False, None),
    (Reply(500, "boom"), False, False, None),
    (Reply(503, "later", {"Retry-After": "4"}), False, False, 4.0),
    (Reply(429, "slow down", {"Retry-After": "2"}), False, False, 2.0),
    (Reply(408, "timeout"), False, False, None),
    (Reply(400, {"error": "bad"}), False, True, None),
    (Reply(404, "no such hook"), False, True, None),
    (Reply(301, "", {"Location": "https://elsewhere.example/x"}), False, True, None),
])
def test_what_a_webhook_answer_means(receiver, reply, ok, permanent, retry_after):
    receiver.cue("/hook/", reply)
    answer = sender_for(Channel("ops", "webhook", f"{receiver.url}/hook/x", created=T0)).send(alert_notice(ALERT))
    assert (answer.ok, answer.permanent, answer.status, answer.retry_after) == (ok, permanent, reply.status,
                                                                                 retry_after)
    if reply.status == 301:
        assert "redirected to https://elsewhere.example/x" in answer.text


def test_a_receiver_that_hangs_is_a_timeout_worth_retrying(receiver):
    receiver.hang("/hook/")
    started = time.monotonic()
    answer = sender_for(Channel("ops", "webhook", f"{receiver.url}/hook/x", created=T0), timeout=0.5).send(
        alert_notice(ALERT))
    assert not answer.ok and not answer.permanent and answer.text == "no answer within 0.5 s"
    assert time.monotonic() - started < 5
    receiver.release()


def test_a_missing_secret_is_worth_retrying_and_says_which_variable(receiver, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    channel = Channel("ops", "webhook", f"{receiver.url}/hook/x", "env:NOT_SET_ANYWHERE", created=T0)
    answer = sender_for(channel).send(alert_notice(ALERT))
    assert not answer.ok and not answer.permanent and "NOT_SET_ANYWHERE is not set" in answer.text
    assert receiver.requests() == []


def test_a_summary_holds_every_alert_and_its_key_is_the_same_for_the_same_alerts(receiver):
    alerts = [{**ALERT, "_id": f"r1|BTC|binance|{T0 + i}", "message": f"line {i}"} for i in range(25)]
    notice = summary_notice(alerts, 30)
    assert notice.key == summary_notice(alerts, 30).key != summary_notice(alerts[:24], 30).key
    assert notice.text.startswith("25 alerts beyond this channel's limit of 30 a minute")
    assert "- line 19" in notice.text and "- ... and 5 more" in notice.text and "line 20" not in notice.text
    assert sender_for(Channel("ops", "webhook", f"{receiver.url}/hook/x", created=T0)).send(notice).ok
    body = receiver.requests("/hook/x")[0].json()
    assert body["type"] == "summary" and body["count"] == 25 and [a["id"] for a in body["alerts"]] == [
        a["_id"] for a in alerts]


@pytest.mark.parametrize("tls", [False, True], ids=["starttls", "tls"])
def test_email_over_starttls_or_tls_with_a_login(certificate, monkeypatch, tls):
    mail = MailReceiver(certificate, "alerts@example.com", "smtp-pass-9876", tls=tls)
    try:
        monkeypatch.setenv("SMTP_PASSWORD", "smtp-pass-9876")
        channel = Channel("mail", "email", "alice@example.com", "env:SMTP_PASSWORD", mail.url, created=T0)
        sender = sender_for(channel, scrubber=Scrubber(), tls_context=certificate.client_context)
        answer = sender.send(alert_notice(ALERT))
        assert answer.ok and answer.status == 250 and "queued as m1" in answer.text, answer
        (got,) = mail.mails
        assert got.login == "alerts@example.com" and got.recipients == ["alice@example.com"]
        assert got.message["Subject"] == f"CryptoPulse: BTC: {ALERT['message']}"
        assert got.message["Message-ID"] == message_id(ALERT["_id"]) and got.message["Idempotency-Key"] == ALERT["_id"]
        assert ALERT["message"] in got.message.get_content()
        # a refused recipient is for good; a busy server is worth retrying; a wrong password is refused
        mail.refused.add("alice@example.com")
        refused = sender.send(alert_notice(ALERT))
        assert (refused.ok, refused.permanent, refused.status) == (False, True, 550)
        mail.refused.clear()
        mail.busy = True
        busy = sender.send(alert_notice(ALERT))
        assert (busy.ok, busy.permanent, busy.status) == (False, False, 451)
        mail.busy = False
        monkeypatch.setenv("SMTP_PASSWORD", "wrong-password-1")
        denied = sender.send(alert_notice(ALERT))
        assert (denied.ok, denied.permanent, denied.status) == (False, True, 535)
        assert "smtp-pass-9876" not in denied.text and "wrong-password-1" not in denied.text
    finally:
        mail.close()


def test_email_refuses_a_server_it_does_not_trust_and_never_logs_in_in_clear(certificate, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", "smtp-pass-9876")
    mail = MailReceiver(certificate, "alerts@example.com", "smtp-pass-9876")
    try:
        channel = Channel("mail", "email", "alice@example.com", "env:SMTP_PASSWORD", mail.url, created=T0)
        untrusted = sender_for(channel, scrubber=Scrubber()).send(alert_notice(ALERT))  # the system's CAs only
        assert not untrusted.ok and not untrusted.permanent and "certificate is not trusted" in untrusted.text
        assert mail.mails == []
    finally:
        mail.close()


def test_email_never_logs_in_where_the_server_offers_no_starttls(certificate, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", "smtp-pass-9876")
    mail = MailReceiver(certificate, "alerts@example.com", "smtp-pass-9876", starttls=False)
    try:
        channel = Channel("mail", "email", "alice@example.com", "env:SMTP_PASSWORD", mail.url, created=T0)
        answer = sender_for(channel, scrubber=Scrubber(), tls_context=certificate.client_context).send(
            alert_notice(ALERT))
        assert not answer.ok and answer.permanent and "does not offer STARTTLS" in answer.text
        assert mail.logins == 0 and mail.mails == []
    finally:
        mail.close()


def test_a_test_message_says_so(receiver):
    channel = Channel("ops", "webhook", f"{receiver.url}/hook/x", created=T0)
    assert sender_for(channel).send(trial_notice(channel, "test-abc")).ok
    body = receiver.requests()[0].json()
    assert body["type"] == "test" and body["id"] == "test-abc" and "control channels test" in body["text"]
