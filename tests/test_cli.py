"""The `flask ctfhost` command group, run through Flask's CLI runner."""

import json
import signal
import uuid

import pytest
import yaml

from ctfhost.models import Challenge, Instance
from ctfhost.worker.queue import destroy_job_id, job_status


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()

    def invoke(*args, input=None):
        return runner.invoke(args=["ctfhost", *args], input=input)

    return invoke


def challenge(slug, **changes):
    data = {"id": slug, "name": slug.title(), "runtime": "fake", "image": f"ctf/{slug}:1", "port": 8000}
    data.update(changes)
    return data


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def assert_fails(result, *fragments):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error:") or "Error:" in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


# -- plugins, init-db, openapi -------------------------------------------------------


def test_plugins_lists_every_plugin_with_version_and_hooks(cli):
    result = cli("plugins")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    blocks = {}
    for line, next_line in zip(lines, lines[1:]):
        if not line.startswith(" ") and next_line.strip().startswith("hooks:"):
            name, *version = line.split()
            blocks[name] = (version, next_line.split(":", 1)[1].strip())
    assert blocks["docker"][0] == ["0.1.0"]
    assert blocks["traefik"][0] == ["0.1.0"]
    for hook in ("launch", "destroy", "register_runtimes", "runtime_options"):
        assert hook in blocks["docker"][1]
        assert hook in blocks["fake-runtime"][1]
    for hook in ("route", "register_blueprints", "register_commands"):
        assert hook in blocks["traefik"][1]
    assert "runtimes: docker, fake" in result.output


def test_plugins_json(cli):
    result = cli("plugins", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    plugins = {p["name"]: p for p in data["plugins"]}
    assert {"docker", "traefik", "fake-runtime"} <= set(plugins)
    assert plugins["docker"]["distribution"] == "ctfhost-plugin-docker"
    assert plugins["traefik"]["distribution"] == "ctfhost-plugin-traefik"
    assert "launch" in plugins["docker"]["hooks"] and "route" in plugins["traefik"]["hooks"]
    assert {"docker", "fake"} <= set(data["runtimes"])
    assert data["disabled"] == []


def test_init_db_is_safe_to_run_again(cli):
    Challenge.create(**challenge("kept"))
    for _ in range(2):
        result = cli("init-db")
        assert result.exit_code == 0, result.output
        assert result.output.startswith("database ready: ")
    assert Challenge.get_by_id("kept").name == "Kept"


def test_init_db_hides_the_database_password(app, cli):
    saved = app.config["CTFHOST_DATABASE_URL"]
    app.config["CTFHOST_DATABASE_URL"] = "postgresql://ctfhost:s3cret@db.internal:5432/ctfhost"
    try:
        result = cli("init-db")
    finally:
        app.config["CTFHOST_DATABASE_URL"] = saved
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    assert "db.internal:5432/ctfhost" in result.output


def test_openapi_prints_the_spec(cli, client, tmp_path):
    result = cli("openapi")
    assert result.exit_code == 0, result.output
    spec = json.loads(result.output)
    assert spec == client.get("/openapi.json").get_json()
    assert "/api/v1/instances" in spec["paths"]
    out = tmp_path / "spec.json"
    assert cli("openapi", "-o", str(out)).exit_code == 0
    assert json.loads(out.read_text()) == spec


# -- challenges import / list -------------------------------------------------------------


def test_import_yaml(cli, tmp_path):
    path = write(tmp_path, "challenges.yaml", yaml.safe_dump([
        challenge("web-one", ttl_seconds=600, cpu_count=2, memory_mb=1024),
        challenge("web-two", extra_config='{"readiness_timeout": 5}'),
    ]))
    result = cli("challenges", "import", path)
    assert result.exit_code == 0, result.output
    assert "imported 2 challenge(s): 2 created, 0 updated" in result.output
    one = Challenge.get_by_id("web-one")
    assert (one.ttl_seconds, one.cpu_count, one.memory_mb, one.port) == (600, 2, 1024, 8000)
    two = Challenge.get_by_id("web-two")
    assert (two.ttl_seconds, two.cpu_count, two.memory_mb) == (None, 1, 512)
    assert two.options == {"readiness_timeout": 5}


def test_import_yaml_with_a_challenges_key_and_nested_extra_config(cli, tmp_path):
    text = """
challenges:
  - id: pwn-heap
    name: Heap
    runtime: fake
    image: ctf/heap:2
    port: 1337
    extra_config:
      readiness_timeout: 10
"""
    result = cli("challenges", "import", write(tmp_path, "c.yml", text))
    assert result.exit_code == 0, result.output
    assert json.loads(Challenge.get_by_id("pwn-heap").extra_config) == {"readiness_timeout": 10}


def test_import_json(cli, tmp_path):
    path = write(tmp_path, "challenges.json", json.dumps([challenge("crypto-rsa", port=443)]))
    result = cli("challenges", "import", path)
    assert result.exit_code == 0, result.output
    assert "1 created" in result.output
    assert Challenge.get_by_id("crypto-rsa").port == 443


def test_import_from_stdin(cli):
    result = cli("challenges", "import", "-", input=json.dumps([challenge("misc-stdin")]))
    assert result.exit_code == 0, result.output
    assert Challenge.get_or_none(Challenge.id == "misc-stdin") is not None


def test_import_upserts(cli, tmp_path):
    cli("challenges", "import", write(tmp_path, "a.yaml", yaml.safe_dump([challenge("web-one"), challenge("web-two")])))
    created_at = Challenge.get_by_id("web-one").created_at
    path = write(tmp_path, "b.yaml", yaml.safe_dump([challenge("web-one", name="Renamed", port=9000),
                                                    challenge("web-three")]))
    result = cli("challenges", "import", path)
    assert result.exit_code == 0, result.output
    assert "imported 2 challenge(s): 1 created, 1 updated" in result.output
    one = Challenge.get_by_id("web-one")
    assert (one.name, one.port, one.created_at) == ("Renamed", 9000, created_at)
    assert one.updated_at >= created_at
    assert sorted(c.id for c in Challenge.select()) == ["web-one", "web-three", "web-two"]
    # importing the same file again changes nothing but the update time
    again = cli("challenges", "import", path)
    assert "0 created, 2 updated" in again.output
    assert Challenge.select().count() == 3


@pytest.mark.parametrize(
    "items, fragments",
    [
        ([{"id": "ok-one", "name": "x", "runtime": "fake", "image": "i", "port": 80},
          {"id": "Bad Slug", "name": "x", "runtime": "fake", "image": "i", "port": 0}], ["invalid", "id", "port", "1"]),
        ([challenge("ok-one"), challenge("bad-two", memory_mb=100)], ["memory_mb"]),
        ([challenge("ok-one"), challenge("bad-two", runtime="kubevirt")], ["kubevirt", "docker", "fake", "nothing was imported"]),
        ([challenge("ok-one"), challenge("bad-two", extra_config='{"colour": 1}')], ["colour", "nothing was imported"]),
        ([challenge("ok-one"), challenge("bad-two", extra_config="[1]")], ["extra_config"]),
        ([challenge("ok-one"), {"id": "no-image", "name": "x", "runtime": "fake", "port": 80}], ["image", "Missing data"]),
        ([challenge("ok-one"), challenge("ok-one", name="Again")], ["ok-one", "nothing was imported"]),
        ([challenge("ok-one"), dict(challenge("bad-two"), difficulty="hard")], ["difficulty", "Unknown field"]),
    ],
)
def test_import_invalid_imports_nothing(cli, tmp_path, items, fragments):
    Challenge.create(**challenge("existing"))
    path = write(tmp_path, "bad.yaml", yaml.safe_dump(items))
    result = cli("challenges", "import", path)
    assert_fails(result, *fragments)
    assert [c.id for c in Challenge.select()] == ["existing"]


def test_import_invalid_update_keeps_the_old_rows(cli, tmp_path):
    cli("challenges", "import", write(tmp_path, "a.json", json.dumps([challenge("web-one"), challenge("web-two")])))
    path = write(tmp_path, "b.json", json.dumps([challenge("web-one", name="Changed"), challenge("web-two", runtime="nope")]))
    assert_fails(cli("challenges", "import", path), "nope")
    assert Challenge.get_by_id("web-one").name == "Web-One"
    assert Challenge.get_by_id("web-two").runtime == "fake"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("id: web\nname: [unclosed", "not valid YAML or JSON"),
        ('{"id": "web-one"', "not valid YAML or JSON"),
        ("id: web-one\nname: x\n", "expected a list of challenges"),
        ("just text", "expected a list of challenges"),
        ("", "expected a list of challenges"),
        ("[1, 2]", "invalid"),
    ],
)
def test_import_unreadable_file_is_a_clear_error(cli, tmp_path, text, fragment):
    path = write(tmp_path, "bad.yaml", text)
    result = cli("challenges", "import", path)
    assert_fails(result, fragment)
    assert "bad.yaml" in result.output
    assert Challenge.select().count() == 0


def test_import_missing_file(cli, tmp_path):
    result = cli("challenges", "import", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    assert "missing.yaml" in result.output


def test_challenges_list(cli, tmp_path):
    assert cli("challenges", "list").output == "(none)\n"
    cli("challenges", "import", write(tmp_path, "c.json", json.dumps([challenge("web-b", ttl_seconds=60), challenge("pwn-a")])))
    result = cli("challenges", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "NAME", "RUNTIME", "IMAGE", "PORT", "CPU_COUNT", "MEMORY_MB", "TTL_SECONDS"]
    assert [line.split()[0] for line in lines[1:]] == ["pwn-a", "web-b"]
    assert lines[1].split()[-1] == "-" and lines[2].split()[-1] == "60"


def test_challenges_list_json(cli, client, tmp_path):
    cli("challenges", "import", write(tmp_path, "c.json", json.dumps([challenge("web-b"), challenge("pwn-a")])))
    result = cli("challenges", "list", "--json")
    assert result.exit_code == 0, result.output
    from ctfhost.testing import API_KEY

    assert json.loads(result.output) == client.get("/api/v1/challenges", headers={"x-api-key": API_KEY}).get_json()


# -- instances list / destroy ---------------------------------------------------------------


@pytest.fixture
def instances(app, api, redis_server):
    worker = f"cli-{uuid.uuid4().hex[:8]}"
    api.post("/api/v1/workers", json={"id": worker, "address": "127.0.0.1", "runtime": "fake"})
    for slug in ("web-one", "pwn-two"):
        api.post("/api/v1/challenges", json=challenge(slug))
    made = [
        api.post("/api/v1/instances", json={"team_id": team, "challenge_id": slug}).get_json()
        for team, slug in ((1, "web-one"), (2, "web-one"), ("team-x", "pwn-two"))
    ]
    assert all("id" in m for m in made), made
    api.delete(f"/api/v1/instances/{made[1]['id']}")
    return worker, made


def test_instances_list(cli, instances):
    _, made = instances
    result = cli("instances", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "TEAM_ID", "CHALLENGE_ID", "STATUS", "ENDPOINT", "EXPIRES_AT"]
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(m["id"] for m in made)
    assert all(m["endpoint"] in result.output for m in made)


def test_instances_list_filters_and_json(cli, instances):
    _, made = instances
    rows = json.loads(cli("instances", "list", "--json").output)
    assert {r["id"] for r in rows} == {m["id"] for m in made}
    by_team = json.loads(cli("instances", "list", "--team", "team-x", "--json").output)
    assert [r["id"] for r in by_team] == [made[2]["id"]]
    assert by_team[0]["team_id"] == "team-x"
    by_challenge = json.loads(cli("instances", "list", "--challenge", "web-one", "--json").output)
    assert {r["id"] for r in by_challenge} == {made[0]["id"], made[1]["id"]}
    destroyed = json.loads(cli("instances", "list", "--status", "destroyed", "--json").output)
    assert [r["id"] for r in destroyed] == [made[1]["id"]]
    assert cli("instances", "list", "--status", "sleeping").exit_code == 2


def test_instances_list_says_when_it_shows_only_some(cli, instances):
    result = cli("instances", "list", "--limit", "1")
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 3
    assert "(1 of 3 shown)" in result.output


def test_instances_destroy(app, cli, api, instances):
    from ctfhost.testing import run_jobs

    worker, made = instances
    target = made[0]["id"]
    result = cli("instances", "destroy", target)
    assert result.exit_code == 0, result.output
    assert target in result.output and "destroyed" in result.output
    assert Instance.get_by_id(target).status == "destroyed"
    assert job_status(destroy_job_id(target)) is not None
    assert api.get("/api/v1/instances/team/1/web-one").status_code == 404
    run_jobs(app, worker)
    assert Instance.get_by_id(made[2]["id"]).status == "running"


@pytest.mark.parametrize("bad", ["not-a-uuid", "12345", ""])
def test_instances_destroy_bad_id(cli, bad):
    assert_fails(cli("instances", "destroy", bad), "is not an instance id")


def test_instances_destroy_unknown_id(cli):
    missing = str(uuid.uuid4())
    assert_fails(cli("instances", "destroy", missing), missing, "not found")


def test_instances_destroy_needs_an_id(cli):
    assert cli("instances", "destroy").exit_code == 2


# -- worker ------------------------------------------------------------------------------------


@pytest.fixture
def keep_signal_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_worker_with_an_unknown_runtime_fails_naming_the_installed_ones(cli, keep_signal_handlers):
    result = cli("worker", "--id", "cli-bad-runtime", "--runtime", "kubevirt")
    assert_fails(result, "kubevirt", "docker", "fake")
    from ctfhost.models import Worker

    assert Worker.get_or_none(Worker.id == "cli-bad-runtime") is None


@pytest.mark.parametrize("args", [["--max-instances", "-1"], ["--concurrency", "0"], ["--agent-port", "x"]])
def test_worker_rejects_bad_options(cli, args):
    result = cli("worker", *args)
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def test_help_lists_the_commands(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("worker", "plugins", "init-db", "challenges", "instances", "openapi"):
        assert command in result.output
