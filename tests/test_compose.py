"""`challenges import-compose` and compose entries of `challenges import`: accepted files, refused ones, messages."""

import json
import textwrap

import pytest

from ctfhost.models import Challenge

WEB_AND_DB = """
services:
  web:
    image: registry.example.org/ctf/notes-web:3
    command: ./serve --port 8080
    environment:
      - DATABASE_URL=postgresql://notes:notes@db/notes
      - DEBUG=false
    ports: ["127.0.0.1:9999:8080"]
    depends_on: [cache, db]
    restart: unless-stopped
  db:
    image: registry.example.org/ctf/notes-db:3
    environment: {POSTGRES_USER: notes, POSTGRES_PASSWORD: notes, POSTGRES_PORT: 5432}
    mem_limit: 1g
    read_only: true
    tmpfs: [/var/run/postgresql, "/tmp:size=64m"]
  cache:
    image: registry.example.org/ctf/cache:1
    entrypoint: ["redis-server", "--save", ""]
    depends_on:
      db: {condition: service_started}
    deploy: {resources: {limits: {cpus: "1.5", memory: 300M}}}
x-ctfhost:
  flag_template: "flag{{{hex:16}}}"
  ttl_seconds: 900
"""


def run(app, *args):
    return app.test_cli_runner().invoke(args=["ctfhost", "challenges", *args])


def write(tmp_path, text, name="docker-compose.yml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_web_and_database_file_becomes_a_challenge_of_three_services(app, api, tmp_path):
    result = run(app, "import-compose", write(tmp_path, WEB_AND_DB), "--id", "web-notes", "--name", "Notes")
    assert result.exit_code == 0, result.output
    assert "imported 1 challenge(s): 1 created, 0 updated" in result.output
    challenge = api.get("/api/v1/challenges/web-notes").get_json()
    assert (challenge["image"], challenge["port"], challenge["protocol"]) == ("registry.example.org/ctf/notes-web:3", 8080, "http")
    assert (challenge["flag_template"], challenge["ttl_seconds"], challenge["runtime"]) == ("flag{{{hex:16}}}", 900, "docker")
    assert json.loads(challenge["extra_config"]) == {
        "command": ["./serve", "--port", "8080"],
        "env": {"DATABASE_URL": "postgresql://notes:notes@db/notes", "DEBUG": "false"},
    }
    db, cache = challenge["services"]["db"], challenge["services"]["cache"]
    assert db["image"] == "registry.example.org/ctf/notes-db:3" and db["memory_mb"] == 1024
    assert db["environment"] == {"POSTGRES_USER": "notes", "POSTGRES_PASSWORD": "notes", "POSTGRES_PORT": "5432"}
    assert db["options"] == {"read_only": True, "tmpfs": {"/var/run/postgresql": "", "/tmp": "size=64m"}}
    assert cache["entrypoint"] == ["redis-server", "--save", ""]
    assert (cache["cpu_count"], cache["memory_mb"]) == (2, 512)  # rounded up to what ctfhost gives
    # started in dependency order (db before cache, as cache depends on it), main last
    assert list(Challenge.get_by_id("web-notes").service_specs) == ["db", "cache"]


def test_importing_again_updates_the_challenge(app, api, tmp_path):
    path = write(tmp_path, WEB_AND_DB)
    assert run(app, "import-compose", path, "--id", "web-notes", "--name", "Notes").exit_code == 0
    result = run(app, "import-compose", path, "--id", "web-notes", "--name", "Notes v2")
    assert "0 created, 1 updated" in result.output
    assert api.get("/api/v1/challenges/web-notes").get_json()["name"] == "Notes v2"


def test_a_single_service_file_needs_no_extension(app, api, tmp_path):
    path = write(tmp_path, "services:\n  pwn:\n    image: ctf/pwn:1\n    expose: ['1337']\n")
    result = run(app, "import-compose", path, "--id", "pwn-one", "--name", "One")
    assert result.exit_code == 0, result.output
    challenge = api.get("/api/v1/challenges/pwn-one").get_json()
    assert (challenge["image"], challenge["port"], challenge["services"]) == ("ctf/pwn:1", 1337, {})


UNSAFE = """
version: "3.8"
services:
  web:
    build: .
    privileged: true
    volumes: ["/:/host"]
    network_mode: host
    ports: ["8080:80"]
  bot:
    image: ctf/bot:1
    devices: ["/dev/kvm:/dev/kvm"]
    cap_add: [SYS_ADMIN]
    environment: [SECRET]
    depends_on: [web, nowhere]
    security_opt: ["seccomp=unconfined"]
volumes:
  data: {}
"""


def test_what_cannot_be_honoured_is_refused_one_message_per_key(app, api, tmp_path):
    result = run(app, "import-compose", write(tmp_path, UNSAFE), "--id", "web-unsafe", "--name", "Unsafe")
    assert result.exit_code != 0
    assert "cannot be a challenge; nothing was imported" in result.output
    for expected in (
        "services.web.build: not supported (ctfhost runs images from a registry",
        "services.web.privileged: not supported (a privileged container owns the host)",
        "services.web.volumes: not supported (instances get no host or shared volumes",
        "services.web.network_mode: not supported (each instance has a network of its own)",
        "services.web: needs `image`",
        "services.bot.devices: not supported (instances get no host devices)",
        "services.bot.security_opt: not supported",
        "services.bot.environment: 'SECRET' has no value",
        "services.bot.depends_on: no service named nowhere",
        "services.bot.depends_on: 'web' is the main service, which starts last",
        "volumes: top-level `volumes` is not supported",
    ):
        assert expected in result.output, (expected, result.output)
    assert api.get("/api/v1/challenges/web-unsafe").status_code == 404


def test_capabilities_beyond_what_the_runtime_grants_are_refused_by_the_runtime(app, api, tmp_path):
    path = write(tmp_path, "services:\n  web:\n    image: ctf/web:1\n    ports: ['80']\n"
                           "  bot:\n    image: ctf/bot:1\n    cap_add: [SYS_ADMIN]\n")
    result = run(app, "import-compose", path, "--id", "web-caps", "--name", "Caps")
    assert result.exit_code != 0
    assert "bot" in result.output and "SYS_ADMIN" in result.output and "nothing was imported" in result.output
    assert api.get("/api/v1/challenges/web-caps").status_code == 404


@pytest.mark.parametrize("text, message", [
    ("services: {}\n", "a compose file needs `services`"),
    ("services:\n  a: {image: x/a:1}\n  b: {image: x/b:1}\n", "x-ctfhost.main: name the service players reach"),
    ("services:\n  a: {image: x/a:1}\nx-ctfhost: {main: b}\n", "x-ctfhost.main: no service named 'b'"),
    ("services:\n  a: {image: x/a:1}\n", "x-ctfhost.port: the main service 'a' exposes no port"),
    ("services:\n  a: {image: x/a:1, ports: ['80']}\n  b: {image: x/b:1, depends_on: [c]}\n  c: {image: x/c:1, depends_on: [b]}\n",
     "depends_on makes a cycle"),
    ("services:\n  a: {image: x/a:1, ports: ['80'], mem_limit: 8g}\n", "more than the largest size ctfhost gives"),
    ("services:\n  a: {image: x/a:1, ports: ['8000-8010']}\n", "port ranges"),
    ("services:\n  a: {image: x/a:1, ports: ['80']}\nx-ctfhost: {colour: red}\n", "x-ctfhost.colour: unknown key"),
    ("services: [\n", "not valid YAML"),
])
def test_bad_files_are_explained(app, tmp_path, text, message):
    result = run(app, "import-compose", write(tmp_path, text), "--id", "web-bad", "--name", "Bad")
    assert result.exit_code != 0 and message in result.output, result.output


def test_a_challenges_file_entry_may_name_a_compose_file(app, api, tmp_path):
    write(tmp_path, WEB_AND_DB, "notes.yml")
    listing = write(tmp_path, """
        - {id: web-notes, name: Notes, compose: notes.yml, max_renewals: 2}
        - {id: web-plain, name: Plain, runtime: docker, image: ctf/plain:1, port: 80}
    """, "challenges.yml")
    result = run(app, "import", listing)
    assert result.exit_code == 0, result.output
    assert "imported 2 challenge(s): 2 created" in result.output
    notes = api.get("/api/v1/challenges/web-notes").get_json()
    assert sorted(notes["services"]) == ["cache", "db"] and notes["max_renewals"] == 2


def test_a_bad_compose_entry_imports_nothing(app, api, tmp_path):
    write(tmp_path, UNSAFE, "unsafe.yml")
    listing = write(tmp_path, """
        - {id: web-plain, name: Plain, runtime: docker, image: ctf/plain:1, port: 80}
        - {id: web-unsafe, name: Unsafe, compose: unsafe.yml}
    """, "challenges.yml")
    result = run(app, "import", listing)
    assert result.exit_code != 0 and "entry 1" in result.output and "privileged" in result.output
    assert api.get("/api/v1/challenges/web-plain").status_code == 404


def test_published_ports_name_main_and_its_port_before_internal_ones(app, api, tmp_path):
    path = write(tmp_path, "services:\n  db: {image: x/db:1, expose: ['5432']}\n"
                           "  web: {image: x/web:1, expose: ['9000'], ports: ['80']}\n")
    result = run(app, "import-compose", path, "--id", "web-ports", "--name", "P")
    assert result.exit_code == 0, result.output
    challenge = api.get("/api/v1/challenges/web-ports").get_json()
    assert (challenge["image"], challenge["port"], list(challenge["services"])) == ("x/web:1", 80, ["db"])


def test_a_kubernetes_runtime_gets_entrypoint_and_command_as_kubernetes_names_them(app, api, tmp_path):
    path = write(tmp_path, "services:\n  pwn: {image: x/pwn:1, ports: ['1337'], entrypoint: [/bin/run], command: [--fast]}\n")
    result = run(app, "import-compose", path, "--id", "pwn-kube", "--name", "K", "--runtime", "kctf")
    assert result.exit_code == 0, result.output
    config = json.loads(api.get("/api/v1/challenges/pwn-kube").get_json()["extra_config"])
    assert (config["command"], config["args"]) == (["/bin/run"], ["--fast"])


@pytest.mark.parametrize("text, message", [
    ("services:\n  a: {image: x/a:1, ports: ['80'], environment: {A: '${HOME}'}}\n", "uses a variable"),
    ("services:\n  a: {image: x/a:1, ports: ['80'], command: 'echo $USER'}\n", "uses a variable"),
    ("services:\n  a: {image: x/a:1, ports: ['80']}\n  b: {image: x/b:1, depends_on: {c: {condition: service_completed_successfully}}}\n"
     "  c: {image: x/c:1}\n", "only `condition: service_started` is honoured"),
    ("services:\n  a: {image: x/a:1, ports: ['80'], deploy: 5}\n", "`deploy` must be a mapping"),
    ("services:\n  a: {image: x/a:1, ports: ['80'], deploy: {resources: [1]}}\n", "`resources` must be a mapping"),
    ("services:\n  a: {image: x/a:1, ports: ['80'], cap_add: 5}\n", "cap_add: must be a list"),
    ("services:\n  a: {image: x/a:1, ports: ['80'], depends_on: [{b: 1}]}\n", "depends_on: must be a list"),
    ("services:\n  a: {image: x/a:1, ports: ['80']}\nx-ctfhost: {main: [a]}\n", "x-ctfhost.main: must be a service name"),
])
def test_odd_values_are_explained_not_crashed_on(app, tmp_path, text, message):
    result = run(app, "import-compose", write(tmp_path, text), "--id", "web-odd", "--name", "Odd")
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_scalar_ports_and_doubled_dollars_are_read_as_compose_reads_them(app, api, tmp_path):
    path = write(tmp_path, "services:\n  a: {image: x/a:1, expose: 3000, environment: {PRICE: '$$5'}}\n")
    result = run(app, "import-compose", path, "--id", "web-scalar", "--name", "S")
    assert result.exit_code == 0, result.output
    challenge = api.get("/api/v1/challenges/web-scalar").get_json()
    assert challenge["port"] == 3000 and json.loads(challenge["extra_config"])["env"] == {"PRICE": "$5"}


def test_the_examples_of_docs_challenges_md_are_accepted(app, api, tmp_path):
    """What docs/challenges.md shows works: its JSON challenge through the API, its compose files through the CLI."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "challenges.md").read_text()
    challenges = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S) if '"services"' in block]
    assert [challenge["id"] for challenge in challenges] == ["web-notes", "pwn-panel"]
    for challenge in challenges:
        answer = api.post("/api/v1/challenges", json=challenge)
        assert answer.status_code == 201, answer.get_json()
    composes = [block for block in re.findall(r"```yaml\n(.*?)```", text, re.S) if block.startswith("services:")]
    assert len(composes) == 2
    for number, block in enumerate(composes):
        result = run(app, "import-compose", write(tmp_path, block, f"example-{number}.yml"),
                     "--id", f"web-example-{number}", "--name", "Example")
        assert result.exit_code == 0, result.output
