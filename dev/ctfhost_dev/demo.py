"""`make demo`: a whole ctfhost on this machine, app server, worker and Traefik on 127.0.0.1, and a launched instance.

Not shipped in any wheel: the demo lives beside the code, built from the
same process helpers the tests and benchmarks use.
"""

import json
import os
import secrets
import signal
import time

import docker

from ctfhost.testing import (
    app_server, fetch_via_proxy, http, open_access_link, port_open, upgrade_database, wait_until, worker_process,
)
from ctfhost_plugin_docker.testing import build_image, busybox_path
from ctfhost_plugin_traefik.testing import traefik

DEMO_IMAGE = "ctfhost-demo:latest"


DEMO_DIR = ".demo"
APP_PORT, WEB_PORT, TRAEFIK_API_PORT = 5000, 8000, 8080
# forward-auth in a gunicorn of its own: players' requests Traefik cannot decide never queue behind the API's
AUTH_PORT = 5001
# the worker agent's own /metrics (launches, destroys, expiries)
WORKER_METRICS_PORT = 5002


DEMO_WORKER = "demo-worker"


# the demo's own bridge, so demo-stop can remove it without touching another ctfhost's
DEMO_NETWORK = "ctfhost-demo-instances"


def _demo_env(api_key, metrics_token):
    env = dict(os.environ)
    env.update(
        CTFHOST_API_KEY=api_key,
        CTFHOST_METRICS_TOKEN=metrics_token,
        CTFHOST_WORKER_METRICS_PORT=str(WORKER_METRICS_PORT),
        CTFHOST_WORKER_TOKEN=secrets.token_urlsafe(24),  # workers register with it, not the API key
        CTFHOST_PUBLIC_PORT=str(WEB_PORT),
        CTFHOST_TRAEFIK_API_URL=f"http://127.0.0.1:{TRAEFIK_API_PORT}",
        CTFHOST_TRAEFIK_FORWARD_AUTH_URL=f"http://127.0.0.1:{AUTH_PORT}/api/v1/auth/forward",
        CTFHOST_DOCKER_NETWORK=DEMO_NETWORK,
    )
    return env


def forward_auth_server(env, port, log_path):
    """The same app in a gunicorn of its own, where Traefik asks forward-auth (CTFHOST_TRAEFIK_FORWARD_AUTH_URL)."""
    service = app_server(env, port, log_path, workers=2, threads=4)
    service.name = "forward-auth"
    return service


def with_metrics_directory(env, directory, name):
    """`env` with PROMETHEUS_MULTIPROC_DIR=<directory>/metrics/<name>: one per server (each /metrics sums only its
    own processes); it must exist before the process starts, and gunicorn's config (or the agent) empties it."""
    path = os.path.abspath(os.path.join(directory, "metrics", name))
    os.makedirs(path, exist_ok=True)
    return dict(env, PROMETHEUS_MULTIPROC_DIR=path)


def demo_api_key(directory=DEMO_DIR):
    """The demo's API key from <directory>/api-key (mode 0600), generated on first use."""
    return demo_secret(directory, "api-key")


def demo_secret(directory, name):
    """A secret of the demo from <directory>/<name> (mode 0600), generated on first use."""
    path = os.path.join(directory, name)
    # O_CREAT|O_EXCL with 0600: the key is never readable by others, not even for a moment
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # a key file left world-readable by an older demo
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24))
    with open(path) as handle:
        return handle.read().strip()


def _demo_pids(directory):
    try:
        with open(os.path.join(directory, "pids.json")) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


def _group_alive(pid):
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _stop_groups(pids, timeout=15):
    """SIGTERM each process group, SIGKILL what is left after `timeout`."""
    for name, pid in pids.items():
        if _group_alive(pid):
            os.killpg(pid, signal.SIGTERM)
            print(f"stopped {name} (pid {pid})")
    deadline = time.monotonic() + timeout
    for pid in pids.values():
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(pid):
            os.killpg(pid, signal.SIGKILL)


def _destroy_instances(api, headers, timeout=60):
    """DELETE every active instance through the API; returns their ids (empty when the API is down)."""
    destroyed = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = []
        for status in ("pending", "running"):
            code, listing = http("GET", f"{api}/instances?status={status}&limit=1000", headers=headers, timeout=5)
            if code != 200:
                return destroyed
            active += [instance["id"] for instance in listing]
        if not active:
            break
        for instance_id in active:
            code, _ = http("DELETE", f"{api}/instances/{instance_id}", headers=headers, timeout=5)
            if code in (204, 404, 409) and instance_id not in destroyed:
                destroyed.append(instance_id)
        time.sleep(0.2)
    return destroyed


def _demo_containers(engine):
    return engine.containers.list(all=True, filters={"label": f"ctfhost.worker={DEMO_WORKER}"})


def demo_stop(directory=DEMO_DIR):
    """Stop what `make demo` started: its instances (through the API), worker, Traefik, app and network."""

    pids = _demo_pids(directory)
    try:
        engine = docker.from_env(timeout=60)
        engine.ping()
    except docker.errors.DockerException as exc:
        engine = None
        print(f"cannot reach the Docker engine ({exc}): instance containers and the network {DEMO_NETWORK} stay")
    if os.path.exists(os.path.join(directory, "api-key")) and "app" in pids and _group_alive(pids["app"]):
        api = f"http://127.0.0.1:{APP_PORT}/api/v1"
        destroyed = _destroy_instances(api, {"x-api-key": demo_api_key(directory)})
        if destroyed:
            print(f"destroying {len(destroyed)} instance(s) through the API ...")
        if destroyed and engine is not None:
            try:
                wait_until(lambda: not _demo_containers(engine), 60, interval=0.5, what="their containers to go")
                print("their containers are gone")
            except TimeoutError as exc:
                print(exc)
    # the worker, Traefik, then the app (instances first: the worker removes their containers)
    _stop_groups({name: pids[name] for name in ("worker", "traefik", "forward-auth", "app") if name in pids})
    if engine is not None:
        for container in _demo_containers(engine):  # the worker was down, or too slow
            container.remove(force=True)
            print(f"removed container {container.name}, left by the demo worker")
        for network in engine.networks.list(names=[DEMO_NETWORK]):
            network.reload()
            if network.attrs.get("Containers"):
                print(f"kept network {DEMO_NETWORK}: containers still use it")
            else:
                network.remove()
                print(f"removed network {DEMO_NETWORK}")
    if pids:
        os.remove(os.path.join(directory, "pids.json"))
    url = os.environ.get("CTFHOST_DATABASE_URL") or "sqlite:///./instance/ctfhost.sqlite3"
    database = url.split("///", 1)[1] if url.startswith("sqlite") else "CTFHOST_DATABASE_URL"  # no password shown
    print(f"kept: the image {DEMO_IMAGE}, {directory}/ (API key, logs, traefik.yml) and the database ({database})")


def demo(directory=DEMO_DIR):
    os.makedirs(directory, exist_ok=True)
    if _demo_pids(directory):
        demo_stop(directory)
    for port in (APP_PORT, AUTH_PORT, WORKER_METRICS_PORT, WEB_PORT, TRAEFIK_API_PORT):
        if port_open(port):
            raise SystemExit(f"port {port} on 127.0.0.1 is in use; stop what uses it and run `make demo` again")
    api_key = demo_api_key(directory)
    metrics_token = demo_secret(directory, "metrics-token")
    env = _demo_env(api_key, metrics_token)

    print(f"building the demo image {DEMO_IMAGE} from {busybox_path()} ...")
    build_image(DEMO_IMAGE, content="hello from a ctfhost instance\n")
    upgrade_database(env)

    services = [
        app_server(with_metrics_directory(env, directory, "app"), APP_PORT, os.path.join(directory, "app.log")),
        forward_auth_server(with_metrics_directory(env, directory, "forward-auth"), AUTH_PORT,
                            os.path.join(directory, "forward-auth.log")),
        traefik(f"http://127.0.0.1:{APP_PORT}/api/v1/traefik/config", api_key, WEB_PORT, TRAEFIK_API_PORT,
                os.path.join(directory, "traefik.log"), env=env),
        worker_process(with_metrics_directory(env, directory, "worker"), os.path.join(directory, "worker.log"),
                       worker_id=DEMO_WORKER),
    ]
    pids = {}
    for service in services:
        service.start()
        pids[service.name] = service.pid
    with open(os.path.join(directory, "pids.json"), "w") as handle:
        json.dump(pids, handle)

    api = f"http://127.0.0.1:{APP_PORT}/api/v1"
    headers = {"x-api-key": api_key}
    try:
        wait_until(lambda: http("GET", f"{api}/health")[0] == 200, 30, what="the API")
        wait_until(
            lambda: any(w["status"] == "active" for w in (http("GET", f"{api}/workers", headers=headers)[1] or [])),
            60, what="the worker to register",
        )
    except TimeoutError as exc:
        for service in services:
            print(f"--- {service.name} log ---\n{service.tail()}")
        raise SystemExit(str(exc)) from None

    challenge = {"id": "demo-web", "name": "Demo web challenge", "runtime": "docker", "image": DEMO_IMAGE,
                 "port": 8080, "ttl_seconds": 3600}
    status, body = http("POST", f"{api}/challenges", challenge, headers)
    if status not in (201, 409):
        raise SystemExit(f"creating the challenge failed: {status} {body}")
    status, active = http("GET", f"{api}/instances/team/demo-team/demo-web", headers=headers)
    if status == 200:
        http("DELETE", f"{api}/instances/{active['id']}", headers=headers)
    started = time.monotonic()
    status, instance = http("POST", f"{api}/instances", {"team_id": "demo-team", "challenge_id": "demo-web"}, headers)
    if status != 201:
        raise SystemExit(f"launching failed: {status} {instance}")
    print(f"launched instance {instance['id']} for team demo-team: {instance['endpoint']}")
    wait_until(lambda: http("GET", f"{api}/instances/{instance['id']}", headers=headers)[1]["status"] != "pending",
               90, what="the instance to start")
    instance = http("GET", f"{api}/instances/{instance['id']}", headers=headers)[1]
    if instance["status"] != "running":
        raise SystemExit(f"the instance is {instance['status']}: {instance['error']}")
    hostname = instance["endpoint"].split("://", 1)[1].split(":")[0]
    print(f"running after {time.monotonic() - started:.2f} s")
    code, _ = fetch_via_proxy(WEB_PORT, hostname)
    print(f"through Traefik without access: HTTP {code} (only the owning team gets in)")
    code, text = open_as_team(api, headers, instance)
    print(f"through Traefik with the team's access link: HTTP {code}: {text.strip()}")
    _, link = http("POST", f"{api}/instances/{instance['id']}/access", {}, headers)
    print()
    print(f"  open in a browser within 60 s: {link['url']}")
    print(f"  API docs:  http://127.0.0.1:{APP_PORT}/docs   (x-api-key: {api_key})")
    print(f"  metrics:   curl -H \"Authorization: Bearer $(cat {directory}/metrics-token)\" "
          f"http://127.0.0.1:{APP_PORT}/metrics; the worker's: http://127.0.0.1:{WORKER_METRICS_PORT}/metrics")
    print(f"  logs in {directory}/; stop everything with `make demo-stop`")
    if code != 200:
        raise SystemExit("the instance did not answer through Traefik")


def open_as_team(api, headers, instance, web_port=WEB_PORT):
    """Ask the API for the instance's access link and open it through Traefik: (status, body)."""
    _, link = http("POST", f"{api}/instances/{instance['id']}/access", {}, headers)
    return open_access_link(web_port, link["url"])
