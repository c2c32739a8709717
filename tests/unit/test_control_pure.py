"""The control plane's pure functions: the back-fill's gap finder, schema diffs and compatibility reasons,
connector failure summaries, and the rendering of `control status`."""

from __future__ import annotations

from datetime import UTC, datetime

from control.connectors import trace_summary
from control.history_window import gaps
from control.schemas import backward_problems, diff
from control.status import render
from cryptopulse.times import epoch_ms
from producer.sources.validation import iso_ms

TICK = {"type": "record", "name": "Tick", "namespace": "cryptopulse", "fields": [
    {"name": "symbol", "type": "string"},
    {"name": "price", "type": "double"},
    {"name": "volume_24h", "type": ["null", "double"], "default": None},
]}


def test_gaps_are_the_windows_farther_than_the_max_gap_from_every_stored_time():
    assert gaps([], 0, 100, 10) == [(0, 100)]
    assert gaps([0, 10, 20, 30], 0, 40, 10) == []
    assert gaps([0, 10, 50, 60], 0, 70, 10) == [(11, 50)]
    assert gaps([40], 0, 100, 10) == [(0, 40), (41, 100)]


def test_a_diff_names_each_field_added_removed_or_changed():
    new = {**TICK, "fields": [TICK["fields"][0], {"name": "price", "type": "float"},
                              {"name": "source", "type": "string", "default": "x"}]}
    assert diff(TICK, new) == ['+ source: string (default "x")', "- volume_24h: [null, double]",
                               "~ price: type double -> float"]
    assert diff(TICK, TICK) == []


def test_compatibility_reasons_say_what_breaks_backward_reading():
    added = {**TICK, "fields": [*TICK["fields"], {"name": "quote", "type": "string"}]}
    (reason,) = backward_problems(TICK, added)
    assert "'quote' is added without a default" in reason
    narrowed = {**TICK, "fields": [TICK["fields"][0], {"name": "price", "type": "int"}, TICK["fields"][2]]}
    assert "changes type from double to int" in backward_problems(TICK, narrowed)[0]
    widened = {**TICK, "fields": [{"name": "symbol", "type": "string"}, {"name": "price", "type": "double"},
                                  {"name": "volume_24h", "type": ["null", "double"], "default": None}]}
    assert backward_problems(TICK, widened) == []


def test_a_trace_summary_is_its_first_line_and_its_root_cause():
    trace = ("org.apache.kafka.connect.errors.ConnectException: Exiting WorkerSinkTask\n\tat a.b(C.java:1)\n"
             "Caused by: x.Y: middle\n\tat d\nCaused by: com.mongodb.MongoSocketOpenException: refused\n")
    assert trace_summary(trace) == ("org.apache.kafka.connect.errors.ConnectException: Exiting WorkerSinkTask ... "
                                    "Caused by: com.mongodb.MongoSocketOpenException: refused")
    assert trace_summary("") == "no trace"


def test_times_from_iso_and_from_the_store_are_exact_to_the_millisecond():
    assert iso_ms("2025-06-02T12:00:00.214Z") == 1_748_865_600_214
    moment = datetime(2025, 6, 2, 12, 0, 0, 214_000, tzinfo=UTC)
    assert epoch_ms(moment) == 1_748_865_600_214


def test_status_renders_every_section_and_says_what_is_down():
    report = {
        "services": {"kafka": {"address": "127.0.0.1:9092", "up": True, "brokers": 1},
                     "mongodb": {"address": "mongodb://127.0.0.1:27017", "up": False, "error": "not reachable"}},
        "connectors": [{"name": "mongo-sink-prices", "state": "RUNNING",
                        "tasks": [{"id": 0, "state": "FAILED", "error": "MongoSocketOpenException"}]}],
        "lag": [{"group": "connect-mongo-sink-prices", "topic": "crypto-prices", "lag": 1234}],
        "topics": {"crypto-prices": 5000},
        "store": {},
        "last_tick": {"BTC": {"ts": "2026-11-30T20:00:00+00:00", "source": "simulated"}},
        "supervision": {"running": True, "report_age_s": 1.0,
                        "components": {"ferretdb": {"state": "restarting", "restarts": 2, "last_error": "exited"},
                                       "kafka": {"state": "running", "restarts": 0, "last_error": None}},
                        "connectors": {"mongo-sink-prices": {"state": "failed", "restarts": 3, "last_error": "x"}}},
        "docker": {"engine": False, "note": "no Docker engine"},
    }
    text = render(report)
    assert "mongodb          DOWN" in text and "not reachable" in text
    assert "task 0 FAILED (MongoSocketOpenException)" in text
    assert "1,234" in text and "BTC" in text
    assert "ferretdb                 RESTARTING  restarts 2    exited" in text
    assert "mongo-sink-prices        FAILED      restarts 3" in text
    assert "docker: no Docker engine" in text


def test_a_failed_step_of_the_stack_says_its_last_words_not_only_where_its_log_is(tmp_path):
    """The cluster tests once failed with `formatting the storage of kafka-1 failed (exit 1); see <log>` and the
    log went with the temporary folder: the error now carries the command's last line (terminal-safe)."""
    import pytest

    from control.stack.installation import run_logged
    from cryptopulse.errors import StackError

    log = tmp_path / "logs" / "kafka-1.log"
    log.parent.mkdir()
    log.write_text("an earlier run said this\n")
    script = "echo formatting; echo 'Invalid cluster.id \x1b[2J in meta.properties' >&2; exit 1"
    with pytest.raises(StackError) as raised:
        run_logged(["sh", "-c", script], tmp_path, log, "formatting the storage of kafka-1")
    message = str(raised.value)
    assert message.startswith("formatting the storage of kafka-1 failed (exit 1): Invalid cluster.id")
    assert "\x1b" not in message and "earlier run" not in message and message.endswith(f"see {log}")
