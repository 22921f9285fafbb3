"""Fixtures of the SDK's tests: a live ctfhost (the core's test server) with a fake-runtime worker, a challenge and a team.

The core's fixtures (``live_server``, ``api``, ``admin``, ``run_jobs``...) come
from ``ctfhost.testing``, registered by the repository's root conftest.py.
Launch jobs run in the test's own thread (``drive``) while the SDK call
under test runs in another, as a worker agent and a player would.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ctfhost.testing import register_fake_worker, run_jobs
from sdk_support import CHALLENGE, TEAM, Scenario, create_challenge, mint_token


@pytest.fixture
def scenario(live_server, api, admin):
    """A fake-runtime worker, an active challenge with per-instance flags, and a team token (every default scope)."""
    worker_id = register_fake_worker(api, prefix="sdk")
    create_challenge(api)
    return Scenario(live_server.url, worker_id, CHALLENGE, TEAM, mint_token(admin))


@pytest.fixture
def drive(app):
    """drive(worker_id, call, *args, **kwargs): run the SDK call in a thread while this one runs the worker's jobs."""

    def run(worker_id, call, *args, timeout=60, **kwargs):
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(call, *args, **kwargs)
            deadline = time.monotonic() + timeout
            while not future.done():
                assert time.monotonic() < deadline, f"{call} did not return in {timeout} s"
                run_jobs(app, worker_id)
                time.sleep(0.05)
            return future.result()

    return run
