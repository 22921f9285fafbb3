"""gunicorn server hooks for ctfhost's metrics: `gunicorn -c python:ctfhost.gunicorn_config ...`.

With PROMETHEUS_MULTIPROC_DIR set (a directory of this gunicorn's own), the
master empties it at start, so values of an earlier run are not added to
this one's, and forgets a worker's live gauges when it exits.
"""

import os

from prometheus_client import multiprocess

from ctfhost.metrics import clear_directory


def on_starting(server):
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        clear_directory(directory)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
