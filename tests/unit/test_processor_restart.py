"""`run_until_signalled`: a processor whose producer cannot go on (a fatal, not fenced, librdkafka error) or whose
records were not delivered is made again and goes on from its last commit, without stopping the processors
beside it; a fenced one ends the process, as before."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError, KafkaException

from cryptopulse import kafka
from cryptopulse.errors import DeliveryError
from cryptopulse.settings import Settings

OUT_OF_ORDER = KafkaException(KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "sequence desynchronization",
                                         fatal=True))
FENCED = KafkaException(KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True))


class Scripted(kafka.Processor):
    """Fails its first step with `error` (the first instance only), then steps until `steps` were made."""

    made: list[Scripted] = []

    def __init__(self, error: BaseException | None, steps: int = 3) -> None:
        super().__init__(Settings(), logging.getLogger("test.restart"))
        self.error = error if not Scripted.made else None
        self.steps = steps
        self.stepped = 0
        self.finished = False
        Scripted.made.append(self)

    def step(self) -> None:
        if self.error is not None:
            raise self.error
        self.stepped += 1
        if self.stepped == self.steps:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` would: everything stops

    def finish(self) -> None:
        self.finished = True


class Steady(kafka.Processor):
    """The processor beside it: steps until stopped."""

    def __init__(self) -> None:
        super().__init__(Settings(), logging.getLogger("test.steady"))
        self.stepped = 0

    def step(self) -> None:
        self.stepped += 1
        self.idle(0.01)


@pytest.fixture(autouse=True)
def signals() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    Scripted.made.clear()
    yield
    faulthandler.cancel_dump_traceback_later()
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("error", [OUT_OF_ORDER, DeliveryError("3 candles could not be delivered; not committing")],
                         ids=["fatal-producer", "undelivered"])
def test_a_processor_that_cannot_go_on_is_made_again_and_its_neighbour_runs_on(error, caplog) -> None:
    steady: list[Steady] = []

    def neighbour() -> Steady:
        steady.append(Steady())
        return steady[-1]

    caplog.set_level(logging.INFO)
    code = kafka.run_until_signalled(lambda: Scripted(error), neighbour)
    assert code == 0
    first, second = Scripted.made
    assert first.finished and first.closed and first.stepped == 0
    assert second.stepped == 3 and second.closed
    assert len(steady) == 1 and steady[0].stepped > 0, "the processor beside it was never stopped nor made again"
    restarted = [r.getMessage() for r in caplog.records if "a new one goes on from the last commit" in r.getMessage()]
    assert len(restarted) == 1 and kafka.error_text(error) in restarted[0]


def test_a_fenced_processor_ends_the_process_with_a_non_zero_exit(caplog) -> None:
    code = kafka.run_until_signalled(lambda: Scripted(FENCED))
    assert code == 1
    assert len(Scripted.made) == 1
    assert any("stopped: fenced by a newer instance" in r.getMessage() for r in caplog.records)


def test_worth_a_restart() -> None:
    retriable = KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))
    assert kafka.worth_a_restart(OUT_OF_ORDER) and kafka.worth_a_restart(DeliveryError("x"))
    assert not kafka.worth_a_restart(FENCED)
    assert not kafka.worth_a_restart(retriable)  # not fatal: the loop waits it out, it never reaches here
    assert not kafka.worth_a_restart(ValueError("a bug"))


def test_a_processor_that_cannot_be_made_again_ends_the_process_with_a_non_zero_exit(caplog) -> None:
    def make() -> Scripted:
        if Scripted.made:
            raise RuntimeError("the registry URL is not a URL")
        return Scripted(OUT_OF_ORDER)

    assert kafka.run_until_signalled(make) == 1
    assert any("could not be made again: the registry URL is not a URL" in r.getMessage() for r in caplog.records)


def test_a_processor_that_cannot_be_made_at_all_ends_the_command_before_any_runs() -> None:
    def broken() -> Steady:
        raise RuntimeError("no such topic prefix")

    steady: list[Steady] = []
    with pytest.raises(RuntimeError, match="no such topic prefix"):
        kafka.run_until_signalled(lambda: steady.append(Steady()) or steady[-1], broken)
    assert steady and steady[0].stepped == 0  # made, never run: nothing is left running
