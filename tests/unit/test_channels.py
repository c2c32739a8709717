"""Alert channels as data (cryptopulse/channel.py): what a person may give, what is stored (never a secret), the
rules' `--notify`, and the schema changes staying BACKWARD compatible."""

from __future__ import annotations

import io
import json

import fastavro
import pytest

from control.schemas import backward_problems
from cryptopulse.alert import Rule, new_rule
from cryptopulse.alert_rules import check_channels
from cryptopulse.channel import Channel, Smtp, channel_names, new_channel
from cryptopulse.errors import ConfigError
from cryptopulse.settings import Settings

T0 = 1_767_000_000_000


def schema(name: str) -> dict:
    return json.loads((Settings().schemas_dir / f"{name}.avsc").read_text())


def test_each_kind_is_made_from_what_the_command_takes():
    hook = new_channel("ops", "webhook", "https://hooks.example.com/a", secret_env="OPS_SECRET", created=T0)
    assert hook == Channel("ops", "webhook", "https://hooks.example.com/a", "env:OPS_SECRET", created=T0)
    assert hook.describe() == "webhook https://hooks.example.com/a (signed); signing secret from $OPS_SECRET"
    phone = new_channel("phone", "ntfy", "https://ntfy.sh/btc-alerts-4f2a", created=T0)
    assert phone.describe() == "ntfy https://ntfy.sh/btc-alerts-4f2a" and phone.secret_from is None
    bot = new_channel("me", "telegram", None, secret_env="TG_TOKEN", chat="-1001234567890", created=T0)
    assert (bot.target, bot.secret_from) == ("-1001234567890", "env:TG_TOKEN")
    mail = new_channel("mail", "email", "alice@example.com", secret_file="/run/secrets/smtp",
                       smtp="smtps://alerts%40example.com@smtp.example.com", created=T0)
    assert mail.secret_from == "file:/run/secrets/smtp" and mail.from_address() == "alerts@example.com"
    assert Smtp.of(mail.smtp) == Smtp("smtp.example.com", 465, True, "alerts@example.com")
    assert Smtp.of("smtp://mx.example.com") == Smtp("mx.example.com", 587, False, None)
    assert "password from the file /run/secrets/smtp" in mail.describe()


@pytest.mark.parametrize(("args", "kwargs", "says"), [
    (("Phone", "ntfy", "https://ntfy.sh/x"), {}, "not a channel name"),
    (("x", "pager", "https://p"), {}, "not a channel kind"),
    (("x", "webhook", "ftp://h/x"), {}, "not a webhook URL"),
    (("x", "webhook", "https://user:pw@h/x"), {}, "carries a credential"),
    (("x", "webhook", "https://h/x?token=abc"), {}, "carries a credential"),
    (("x", "ntfy", "https://ntfy.sh/"), {}, "the topic's URL"),
    (("x", "telegram", None), {"chat": "12"}, "bot token"),
    (("x", "telegram", None), {"secret_env": "T"}, "--chat"),
    (("x", "telegram", "12"), {"secret_env": "T", "chat": "12"}, "not as a positional"),
    (("x", "telegram", None), {"secret_env": "T", "chat": "not a chat"}, "not a Telegram chat"),
    (("x", "email", "alice@example.com"), {"secret_env": "P"}, "--smtp"),
    (("x", "email", "alice@example.com"), {"smtp": "smtp://h"}, "password"),
    (("x", "email", "not-an-address"), {"smtp": "smtp://h", "secret_env": "P"}, "not an email address"),
    (("x", "email", "a@example.com"), {"smtp": "smtp://u:pw@h", "secret_env": "P"}, "carries a password"),
    (("x", "email", "a@example.com"), {"smtp": "http://h", "secret_env": "P"}, "not an SMTP server"),
    (("x", "webhook", "https://h/x"), {"secret_env": "not a name"}, "NAME, never its value"),
    (("x", "webhook", "https://h/x"), {"secret_env": "A", "secret_file": "/f"}, "not both"),
    (("x", "ntfy", "https://ntfy.sh/t"), {"smtp": "smtp://h"}, "email channels only"),
])
def test_what_is_wrong_is_said_with_what_to_give(args, kwargs, says):
    with pytest.raises(ConfigError, match=says):
        new_channel(*args, **kwargs)


def test_a_credential_in_a_url_is_a_placeholder_filled_at_send_time():
    hook = new_channel("slack", "webhook", "https://hooks.example.com/services/${SLACK_HOOK_PATH}")
    assert hook.target.endswith("${SLACK_HOOK_PATH}")
    with pytest.raises(ConfigError, match="not a webhook URL"):
        new_channel("x", "webhook", "https://${HOST}/x")  # the host is never a secret


def test_a_channel_record_holds_where_the_secret_is_never_the_secret(monkeypatch):
    monkeypatch.setenv("OPS_SECRET", "s3cret-value-1234")
    channel = new_channel("ops", "webhook", "https://h/x", secret_env="OPS_SECRET", created=T0)
    parsed = fastavro.parse_schema(schema("alert_channel"))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, channel.to_record())
    assert b"s3cret-value-1234" not in out.getvalue() and b"env:OPS_SECRET" in out.getvalue()
    assert Channel.from_record(fastavro.schemaless_reader(io.BytesIO(out.getvalue()), parsed, None)) == channel


def test_rules_name_their_channels():
    assert channel_names("phone, ops,phone") == ("phone", "ops")
    assert channel_names(["phone"]) == ("phone",) and channel_names("") == ()
    with pytest.raises(ConfigError):
        channel_names("phone,Ops")
    with pytest.raises(ConfigError, match="at most 10"):
        channel_names([f"c{i}" for i in range(11)])
    assert Rule("r", "BTC", "above", price=1.0, channels="phone").channels == ("phone",)
    rule = new_rule("BTC", "above", 70000, created=T0, channels=("phone", "ops"))
    assert rule.describe() == "BTC above 70,000; notify phone, ops"
    assert Rule.from_record(rule.to_record()) == rule


def without(name: str, field: str) -> dict:
    old = schema(name)
    return {**old, "fields": [f for f in old["fields"] if f["name"] != field]}


@pytest.mark.parametrize("name", ["alert_rule", "alert"])
def test_the_channels_field_is_a_backward_compatible_addition(name):
    old, new = without(name, "channels"), schema(name)
    assert backward_problems(old, new) == []
    # a record written before it is read with no channel: a rule of before notifies nobody
    written = io.BytesIO()
    record = ({"id": "r1", "symbol": "BTC", "kind": "above", "price": 1.0, "created": T0} if name == "alert_rule" else
              {"_id": "a", "rule_id": "r", "symbol": "BTC", "source": "s", "kind": "above", "direction": "up",
               "threshold": 1.0, "price": 2.0, "ts": T0, "message": "m", "fired_at": T0})
    fastavro.schemaless_writer(written, fastavro.parse_schema(old), record)
    read = fastavro.schemaless_reader(io.BytesIO(written.getvalue()), fastavro.parse_schema(old),
                                      fastavro.parse_schema(new))
    assert read["channels"] == []
    if name == "alert_rule":
        assert Rule.from_record(read).channels == ()


def test_a_channel_belongs_to_an_account_an_addition_older_records_read_as_the_operators():
    """`owner` (issue 21): a record written before it reads as the operator's channel; an account's rule may name
    its own channels and the operator's, never another account's."""
    old, new = without("alert_channel", "owner"), schema("alert_channel")
    assert backward_problems(old, new) == []
    written = io.BytesIO()
    fastavro.schemaless_writer(written, fastavro.parse_schema(old),
                               {"name": "ops", "kind": "ntfy", "target": "https://ntfy.sh/x", "created": T0})
    read = Channel.from_record(fastavro.schemaless_reader(io.BytesIO(written.getvalue()), fastavro.parse_schema(old),
                                                          fastavro.parse_schema(new)))
    assert read.owner is None
    mine = new_channel("phone", "ntfy", "https://ntfy.sh/y", created=T0, owner="alice")
    assert Channel.from_record(mine.to_record()) == mine
    assert [c.usable_by("alice") for c in (read, mine)] == [True, True]
    assert [c.usable_by("bob") for c in (read, mine)] == [True, False]
    assert [c.usable_by(None) for c in (read, mine)] == [True, True]  # the operator's own rules name any
    with pytest.raises(ConfigError, match="no channel phone of bob"):
        check_channels(new_rule("BTC", "above", 1, owner="bob", channels=("phone",)), [read, mine])
    check_channels(new_rule("BTC", "above", 1, owner="alice", channels=("phone", "ops")), [read, mine])
