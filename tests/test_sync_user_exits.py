"""SyncOptimizely: ``SystemExit`` or ``KeyboardInterrupt`` raised by the user's code on the client's loop thread.

A LOG_EVENT listener, a custom dispatcher and ``on_drop`` run on the loop thread the client
owns. There, ``sys.exit()`` could only end that thread (Python never exits the process from another thread),
so the SDK treats it as it treats any other exception from the user's code: logged, and the loop thread goes
on. Before, the exception ended the loop thread: queued events were lost (``shutdown_cancelled``), later calls
waited for a thread that was gone and the events they produced were never sent. Each case runs in a child
process, since a dead loop thread would leave the test process waiting.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from _lifecycle_kit import datafile
from _support.child import last_json, run_python


def _script(raise_: str) -> str:
    """Five events, one request each. The first LOG_EVENT reaches a listener that raises ``raise_``; the
    dispatcher raises it for the second request; ``on_drop`` raises it when told about that drop. The child
    prints one JSON line: what was sent, the close report, how long it all took."""
    return textwrap.dedent(
        f"""
        import json, logging, sys, time
        from optimizely_async import DispatchResult, NotificationType, SyncOptimizely

        logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

        def boom():
            raise {raise_}

        sent, dispatches, told = [], [], []

        class Out:
            def dispatch(self, request):
                dispatches.append(1)
                if len(dispatches) == 2:
                    boom()
                sent.extend(v["visitor_id"] for v in request.payload["visitors"])
                return DispatchResult(delivered=True, status=200)

        def on_drop(events, reason):
            told.append(reason)
            boom()

        heard = []

        def listener(event):
            heard.append("sync")
            if heard.count("sync") == 1:
                boom()

        started = time.monotonic()
        client = SyncOptimizely(
            datafile={json.dumps(datafile())}, event_dispatcher=Out(), batch_size=1, on_drop=on_drop
        )
        client.notification_center.add_notification_listener(NotificationType.LOG_EVENT, listener)
        for i in range(4):
            client.track("buy", f"u{{i}}")
        client.flush(timeout=20)
        client.track("buy", "u9")  # after the exceptions: still sent
        client.flush(timeout=20)
        report = client.close(timeout=20)
        print(json.dumps({{
            "sent": sorted(sent),
            "told": told,
            "heard": heard.count("sync"),
            "delivered": report.delivered,
            "dropped": report.dropped,
            "submitted": report.submitted,
            "timed_out": report.timed_out,
            "seconds": time.monotonic() - started,
        }}), flush=True)
        """
    )


def run_child(script: str) -> tuple[dict[str, Any], str]:
    """Run ``script`` in a child Python (the SDK's src on its path); its last stdout line (JSON) and its stderr.
    The child must exit with status 0."""
    process = run_python(script)
    return last_json(process), process.stderr


@pytest.mark.parametrize("raise_", ["SystemExit(3)", "KeyboardInterrupt()"])
def test_the_loop_thread_survives_exits_raised_by_the_users_code(raise_: str) -> None:
    result, stderr = run_child(_script(raise_))
    assert result["sent"] == ["u0", "u2", "u3", "u9"], stderr
    assert result["told"] == ["dispatch_error"]
    assert result["heard"] == 5  # one LOG_EVENT per request
    assert (result["submitted"], result["delivered"], result["dropped"]) == (5, 4, {"dispatch_error": 1})
    assert result["timed_out"] is False
    # Nothing waited for a flush or close timeout (20 s each): the thread answered every call.
    assert result["seconds"] < 15, result
    # Each exception was logged, with its traceback, as the user's code's failure.
    name = raise_.split("(")[0]
    assert stderr.count(f"\n{name}") >= 3, stderr
    assert "loop thread failed" not in stderr


def test_on_the_calling_thread_an_exit_from_a_listener_passes_through() -> None:
    """A DECISION listener runs in the calling thread: there ``sys.exit()`` means what the user meant."""
    from optimizely_async import NotificationType, SyncOptimizely

    client = SyncOptimizely(datafile=datafile())

    def listener(*args: object) -> None:
        raise SystemExit(4)

    client.notification_center.add_notification_listener(NotificationType.DECISION, listener)
    try:
        with pytest.raises(SystemExit) as caught:
            client.is_feature_enabled("flag", "u1")
        assert caught.value.code == 4
    finally:
        client.close()


def test_an_exit_from_the_users_code_run_for_a_call_on_the_loop_thread_reaches_the_caller() -> None:
    """With CMAB experiments in the datafile, decisions run on the loop thread, with the user profile service and
    DECISION listeners: an exit they raise reaches the caller, as in the caller's own thread, and the loop thread
    goes on (before, it ended: later calls hung or their events were lost)."""
    script = textwrap.dedent(
        f"""
        import json, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from _cmab_support import small_datafile
        from optimizely_async import DispatchResult, NotificationType, SyncOptimizely

        class Profiles:
            calls = 0
            def lookup(self, user_id):
                Profiles.calls += 1
                if Profiles.calls == 1:
                    raise SystemExit(5)
            def save(self, profile):
                pass

        class Out:
            sent = []
            def dispatch(self, request):
                Out.sent.extend(v["visitor_id"] for v in request.payload["visitors"])
                return DispatchResult(delivered=True, status=200)

        heard = []
        def listener(*args):
            heard.append(1)
            if len(heard) == 1:
                raise KeyboardInterrupt

        client = SyncOptimizely(
            datafile=json.dumps(small_datafile()), user_profile_service=Profiles(), event_dispatcher=Out(),
            cmab_prediction_endpoint="http://127.0.0.1:9/{{}}", cmab_request_timeout=0.5,
        )
        assert client.config.has_cmab
        client.notification_center.add_notification_listener(NotificationType.DECISION, listener)
        user = client.create_user_context("u1")
        caught = []
        started = time.monotonic()
        for expected in (SystemExit, KeyboardInterrupt):
            try:
                user.decide("odp_flag")
            except expected:
                caught.append(expected.__name__)
        decision = user.decide("odp_flag")  # no exit this time: an ordinary decision
        client.track("purchase", "u2")
        report = client.close(timeout=20)
        print(json.dumps({{
            "caught": caught, "decided": decision.flag_key, "heard": len(heard), "sent": sorted(set(Out.sent)),
            "delivered": report.delivered, "dropped": report.dropped, "timed_out": report.timed_out,
            "seconds": time.monotonic() - started,
        }}), flush=True)
        """
    )
    result, stderr = run_child(script)
    assert result["caught"] == ["SystemExit", "KeyboardInterrupt"], stderr
    assert (result["decided"], result["heard"]) == ("odp_flag", 2)
    assert result["sent"] == ["u1", "u2"] and not result["dropped"] and result["timed_out"] is False, result
    assert result["seconds"] < 15, result
    assert "loop thread failed" not in stderr
