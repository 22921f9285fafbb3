"""The `ctfhost` command against the live server: human and --json output, and its exit codes."""

import io
import json
import pathlib
import subprocess
import time

import pytest

from ctfhost.testing import free_port, venv_bin
from ctfhost_client import cli
from sdk_support import create_challenge, mint_token, random_uuid

pytestmark = pytest.mark.usefixtures("redis_server")


def run(scenario, *argv, token=None, environ=None):
    """(exit code, stdout, stderr) of `ctfhost ARGV` run in this process."""
    stdout, stderr = io.StringIO(), io.StringIO()
    env = {"CTFHOST_URL": scenario.url, "CTFHOST_TOKEN": token or scenario.token} if environ is None else environ
    code = cli.main(list(argv), stdout=stdout, stderr=stderr, environ=env)
    return code, stdout.getvalue(), stderr.getvalue()


def test_start_wait_ls_open_renew_restart_stop(scenario, drive):
    code, out, err = drive(scenario.worker_id, run, scenario, "start", scenario.challenge_id, "--wait", "--json")
    assert code == cli.OK, err
    instance = json.loads(out)
    assert instance["status"] == "running" and instance["endpoint"].endswith(".sdk-web.localhost")

    code, out, _ = run(scenario, "ls")
    assert code == 0 and instance["id"] in out and "running" in out and "endpoint: http://" in out
    code, out, _ = run(scenario, "ls", "--json")
    assert [i["id"] for i in json.loads(out)] == [instance["id"]]

    code, out, _ = run(scenario, "open", instance["id"])
    assert code == 0 and out.strip().startswith(instance["endpoint"] + "/.ctfhost/access?ticket=")
    time.sleep(1.1)  # a renew must extend the expiry: now + TTL must pass the launch's own by a second
    code, out, _ = run(scenario, "--json", "renew", instance["id"])
    assert code == 0 and "seconds_added" in json.loads(out)
    time.sleep(1.1)
    code, out, _ = run(scenario, "renew", instance["id"])
    assert code == 0 and f"instance {instance['id']} renewed" in out

    code, out, _ = run(scenario, "restart", instance["id"], "--json")
    fresh = json.loads(out)
    assert code == 0 and fresh["id"] != instance["id"] and fresh["status"] == "pending"
    code, out, _ = run(scenario, "stop", fresh["id"])
    assert code == 0 and out.strip() == f"instance {fresh['id']} stopped"
    code, out, _ = run(scenario, "ls")
    assert out.strip() == "no instances"
    code, out, _ = run(scenario, "ls", "--all", "--json")
    assert {i["status"] for i in json.loads(out)} == {"destroyed"}


def test_start_human_output_and_progress(scenario, drive):
    code, out, err = drive(scenario.worker_id, run, scenario, "start", scenario.challenge_id, "--wait")
    assert code == 0, err
    assert " sdk-web  running" in out.splitlines()[0] and "expires: " in out
    assert "running" in err  # progress lines on stderr


def test_submit_and_verify_exit_codes(scenario, drive):
    code, out, _ = drive(scenario.worker_id, run, scenario, "start", scenario.challenge_id, "--wait", "--json")
    instance = json.loads(out)
    flag = scenario.key_client().instances.get(instance["id"]).flag
    code, out, _ = run(scenario, "verify", scenario.challenge_id, "flag{wrong}")
    assert code == cli.WRONG_FLAG == 8 and out.startswith("wrong: ")
    code, out, _ = run(scenario, "submit", scenario.challenge_id, flag, "--json")
    assert code == 0 and json.loads(out)["correct"] is True


def test_error_exit_codes(scenario, admin):
    code, _, err = run(scenario, "show", random_uuid())
    assert code == cli.NOT_FOUND == 4 and "404" in err
    code, _, err = run(scenario, "--json", "show", random_uuid())
    assert code == 4 and json.loads(err)["error"]["type"] == "NotFound"
    code, _, err = run(scenario, "ls", token="cth_wrong")
    assert code == cli.AUTH == 3
    read_only = mint_token(admin, scopes=["instances:read"])
    code, _, err = run(scenario, "start", scenario.challenge_id, "--json", token=read_only)
    assert code == 3 and json.loads(err)["error"]["errors"]["scope"] == "instances:write"
    run(scenario, "start", scenario.challenge_id)
    code, _, err = run(scenario, "start", scenario.challenge_id)
    assert code == cli.SERVER_ERROR == 1 and "already has an active instance" in err
    code, _, err = run(scenario, "start", scenario.challenge_id, environ={"CTFHOST_TOKEN": scenario.token})
    assert code == cli.USAGE == 2 and "CTFHOST_URL" in err
    code, _, _ = run(scenario, "frobnicate")
    assert code == 2
    dead = {"CTFHOST_URL": f"http://127.0.0.1:{free_port()}", "CTFHOST_TOKEN": "cth_x"}
    code, _, err = run(scenario, "ls", environ=dead)
    assert code == cli.CONNECTION == 7


def test_instance_failed_and_timeout_exit_codes(scenario, api, drive):
    create_challenge(api, "sdk-broken", extra_config={"fail": "the image is broken"})
    code, _, err = drive(scenario.worker_id, run, scenario, "start", "sdk-broken", "--wait", "--json")
    assert code == cli.INSTANCE_FAILED == 5
    assert json.loads(err)["error"]["instance"]["status"] == "error"
    code, _, err = run(scenario, "start", scenario.challenge_id, "--wait", "--timeout", "1")
    assert code == cli.TIMEOUT == 6 and "still pending" in err


def test_whoami_and_challenges(scenario):
    code, out, _ = run(scenario, "whoami")
    assert code == 0 and f"caller: team, team {scenario.team_id}" in out and "scopes: " in out
    code, out, _ = run(scenario, "whoami", "--json")
    assert json.loads(out)["caller"]["kind"] == "team"
    code, out, _ = run(scenario, "challenges", "--json")
    assert [c["id"] for c in json.loads(out)] == [scenario.challenge_id]


def test_the_console_script(scenario):
    env = {"CTFHOST_URL": scenario.url, "CTFHOST_TOKEN": scenario.token, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([venv_bin("ctfhost"), "whoami", "--json"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["caller"]["team_id"] == scenario.team_id
    done = subprocess.run([venv_bin("ctfhost"), "show", random_uuid()], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 4 and done.stderr.startswith("ctfhost: error: 404")
    done = subprocess.run([venv_bin("ctfhost"), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "exit codes:" in done.stdout


def test_the_readme_quick_start_runs(scenario, api, drive, monkeypatch):
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0].replace("web-babysql", scenario.challenge_id)
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.setenv("CTFHOST_URL", scenario.url)
    monkeypatch.setenv("CTFHOST_TOKEN", scenario.token)
    operator = scenario.key_client()

    def solve(endpoint):
        (instance,) = operator.instances.list(challenge_id=scenario.challenge_id, status="running")
        assert instance.endpoint == endpoint
        return instance.flag

    namespace = {"solve": solve, "print": lambda *args: None}
    drive(scenario.worker_id, exec, code, namespace)
    assert namespace["instance"].status == "running"
    assert operator.instances.get(namespace["instance"].id).status == "destroyed"


@pytest.mark.parametrize("document", ["clients/python/README.md", "docs/automation.md"])
def test_the_documented_exit_codes_are_the_commands(document):
    text = (pathlib.Path(__file__).parents[3] / document).read_text()
    table = text.split("| exit code | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = {int(line.split("|")[1]) for line in table.splitlines()[2:] if line.startswith("| ")}
    assert documented == set(cli.EXIT_CODES) | {cli.INTERRUPTED}


def test_the_token_option_warns_that_the_command_line_is_readable():
    """--token (and --api-key) put the secret in argv, which every local user reads with ps: help and README say so."""
    words = " ".join(cli.build_parser().format_help().split())
    assert "every local user" in words and "prefer setting CTFHOST_TOKEN" in words
    readme = " ".join((pathlib.Path(cli.__file__).parent.parent / "README.md").read_text().split())
    assert "every user of the machine can read" in readme and "`ps`" in readme and "`CTFHOST_TOKEN` is not" in readme
