"""A paced build in a worker thread gets the GIL even from an event loop that never idles.

Such a loop releases the GIL and takes it back at every iteration (around its ``select(0)``), always before
a waiting thread wakes up, so without help the worker waits hundreds of milliseconds at each of its yields.
"""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from optimizely_async.config import loader
from optimizely_async.config.loader import Pacer, run_paced


def _fake_time() -> tuple[list[float], list[float], Pacer]:
    now = [0.0]
    sleeps: list[float] = []

    def clock() -> float:
        return now[0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds  # sleep(0) gets the GIL straight back: nobody else wanted it

    return now, sleeps, Pacer(budget=0.001, rest=0.004, clock=clock, sleep=sleep)


def test_waiting_for_counts_from_the_last_run() -> None:
    now, _, pause = _fake_time()
    now[0] += 0.003
    assert pause.waiting_for() == pytest.approx(0.003)  # never ran since it was made
    pause()
    assert pause.waiting_for() == 0.0
    now[0] += 0.002
    assert pause.waiting_for() == pytest.approx(0.002)  # the build has not run for 2 ms: it waits for the GIL
    pause.done()
    now[0] += 1.0
    assert pause.waiting_for() == 0.0  # a finished build is never lent the GIL


def test_a_build_resting_is_not_waiting_for_the_gil() -> None:
    now = [0.0]
    seen: list[float] = []

    def sleep(seconds: float) -> None:
        if seconds:
            now[0] += seconds / 2
            seen.append(pause.waiting_for())  # half-way through its rest
            now[0] += seconds / 2
        else:
            now[0] += 0.001  # the GIL came back late: the loop is busy

    pause = Pacer(budget=0.001, rest=0.004, clock=lambda: now[0], sleep=sleep)
    now[0] += 0.002
    pause()
    assert seen == [0.0]


def test_a_loan_is_signalled_used_for_a_whole_budget_and_repaid_with_a_rest() -> None:
    now, sleeps, pause = _fake_time()
    lender = threading.Thread(target=pause.lend, args=(30.0,))
    lender.start()
    deadline = time.monotonic() + 10
    while pause.lent == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert pause.lent == 1
    now[0] += 0.002  # well past the budget: the build was waiting for the GIL
    pause()  # it has it now
    lender.join(10)
    assert not lender.is_alive(), "the lender was not told that the build took the GIL"
    assert sleeps == []  # the budget starts again at the loan
    now[0] += 0.0011
    pause()
    # The GIL came back at once, but after a loan the build rests all the same: the loop's thread is waiting.
    assert sleeps == [0, 0.004]
    now[0] += 0.0011
    pause()
    assert sleeps == [0, 0.004, 0]  # only once per loan


def _busy_work(pause: loader.Pause, yields: int) -> int:
    """Pure Python for about ``yields`` budgets of 0.5 ms, calling ``pause`` every few microseconds."""
    total = 0
    for _ in range(yields):
        end = time.perf_counter() + 0.0005
        while time.perf_counter() < end:
            for i in range(50):
                total += i
            pause()
    return total


@pytest.mark.anyio
async def test_paced_work_finishes_on_a_loop_that_never_idles() -> None:
    stop = anyio.Event()
    spins = [0]

    async def spin() -> None:
        while not stop.is_set():
            spins[0] += 1
            await anyio.sleep(0)

    pacer = Pacer()
    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(spin)
        await anyio.sleep(0.05)
        # 300 budgets of 0.5 ms. On a 2-core machine this took 32 s on asyncio and over 60 s on trio without the
        # loans (the worker waited 100-200 ms for the GIL at each yield), and 3.5 s on both with them.
        with anyio.fail_after(20):
            total = await run_paced(lambda pause: _busy_work(pause, 300), pacer)
        stop.set()
    assert total > 0 and spins[0] > 1000
    assert pacer.waiting_for() == 0.0  # done: nothing more is lent


@pytest.mark.anyio
async def test_run_paced_raises_what_the_work_raises() -> None:
    def fail(pause: loader.Pause) -> None:
        pause()
        raise ValueError("bad datafile")

    with pytest.raises(ValueError, match="bad datafile"):
        await run_paced(fail)
