"""A Celery app for tests/test_sync_celery.py: the worker's main process creates the client at import, then its
prefork pool forks the children that run the tasks. The in-memory broker lives in the main process, which
also sends the tasks (on ``worker_ready``): a real pool and real forks, no broker server."""

from __future__ import annotations

import os
import time

from celery import Celery
from celery.signals import worker_ready

from _sync_support import EVENT_KEY, datafile
from optimizely_async import SyncOptimizely

TASKS = int(os.environ.get("SYNC_TEST_TASKS", "30"))

app = Celery("sync_test", broker="memory://")
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=1,
    broker_transport_options={"polling_interval": 0.01},
)

client = SyncOptimizely(datafile(), event_endpoint=os.environ["SYNC_TEST_SINK"], flush_interval=60.0)
client.track(EVENT_KEY, "celery-main")  # waiting in the main process's queue when the pool forks


@app.task
def decide_and_track(user: str) -> None:
    time.sleep(0.03)  # a little work, so that both pool processes take tasks
    assert client.is_feature_enabled("flag", user)  # sends an impression
    client.track(EVENT_KEY, user)
    with open(os.environ["SYNC_TEST_DONE"], "a") as done:  # one line per task, for the test
        done.write(f"{os.getpid()} {user}\n")


@worker_ready.connect
def send_tasks(**_: object) -> None:
    for i in range(TASKS):
        decide_and_track.delay(f"task-{i}")
