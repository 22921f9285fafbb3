"""TCP challenges: TLS with SNI through Traefik, one shared port, real Docker."""

import json
import socket
import ssl
import time
import uuid

import pytest

from ctfhost.testing import wait_until
from ctfhost.testing import run_jobs

ECHO = ["/bin/nc", "-ll", "-p", "1337", "-e", "/bin/sh", "-c", 'echo "hello from $FLAG"; cat']


def tls_session(port, hostname, send=b"ping\n", timeout=5):
    """Connect to Traefik's TLS port with SNI, read the greeting, send a line, read the echo."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's self-signed default certificate
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as conn:
            received = b""
            deadline = time.monotonic() + timeout
            while b"\n" not in received and time.monotonic() < deadline:
                received += conn.recv(1024)
            conn.sendall(send)
            echo = b""
            while not echo.endswith(send) and time.monotonic() < deadline:
                chunk = conn.recv(1024)
                if not chunk:
                    break
                echo += chunk
            return received.decode(), echo


@pytest.fixture
def tcp_port_setting(app, traefik_proxy):
    saved = app.config["CTFHOST_TCP_PUBLIC_PORT"]
    app.config["CTFHOST_TCP_PUBLIC_PORT"] = traefik_proxy.tls_port
    yield traefik_proxy.tls_port
    app.config["CTFHOST_TCP_PUBLIC_PORT"] = saved


def test_tcp_endpoint_and_connection_commands(api, redis_server):
    worker = f"tcp-{uuid.uuid4().hex[:6]}"
    api.post("/api/v1/workers", json={"id": worker, "address": "127.0.0.1", "runtime": "fake"})
    body = {"id": "pwn-echo", "name": "e", "runtime": "fake", "image": "i", "port": 1337, "protocol": "tcp"}
    assert api.post("/api/v1/challenges", json=body).get_json()["protocol"] == "tcp"
    instance = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "pwn-echo"}).get_json()
    host = instance["endpoint"][len("tls://"):].rsplit(":", 1)[0]
    assert instance["endpoint"] == f"tls://{host}:443" and host.endswith(".pwn-echo.localhost")
    assert instance["protocol"] == "tcp"
    assert instance["connection"] == {
        "openssl": f"openssl s_client -quiet -connect {host}:443 -servername {host}",
        "pwntools": f"remote('{host}', 443, ssl=True, sni='{host}')",
        "ncat": f"ncat --ssl {host} 443",
    }
    assert api.patch("/api/v1/settings", json={"tcp_port": 31337}).status_code == 200
    other = api.post("/api/v1/instances", json={"team_id": 2, "challenge_id": "pwn-echo"}).get_json()
    assert other["endpoint"].endswith(":31337")
    assert api.post("/api/v1/challenges", json={**body, "id": "pwn-x", "protocol": "udp"}).status_code == 422
    http = api.post("/api/v1/challenges", json={**body, "id": "web-x", "protocol": "http"}).get_json()
    assert http["protocol"] == "http"


def test_tcp_config_has_sni_routers(api, app, redis_server):
    worker = f"tcp-{uuid.uuid4().hex[:6]}"
    api.post("/api/v1/workers", json={"id": worker, "address": "127.0.0.1", "runtime": "fake"})
    api.post("/api/v1/challenges", json={"id": "pwn-cfg", "name": "c", "runtime": "fake", "image": "i", "port": 1337,
                                         "protocol": "tcp"})
    instance = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "pwn-cfg"}).get_json()
    run_jobs(app, worker)
    config = api.get("/api/v1/traefik/config").get_json()
    router = config["tcp"]["routers"][f"ctfhost-{instance['id']}"]
    host = instance["endpoint"][len("tls://"):].rsplit(":", 1)[0]
    assert router["rule"] == f"HostSNI(`{host}`)" and router["tls"] == {}


@pytest.mark.docker
def test_tcp_instances_through_traefik_with_sni(live_server, traefik_proxy, worker_agent, test_image, tcp_port_setting):
    body = {"id": "pwn-echo", "name": "Echo", "runtime": "docker", "image": test_image, "port": 1337, "protocol": "tcp",
            "flag_template": "flag{{{hex:12}}}", "extra_config": json.dumps({"command": ECHO})}
    status, created = live_server.call("POST", "/api/v1/challenges", body)
    assert status == 201, created
    first = live_server.call("POST", "/api/v1/instances", {"team_id": "a", "challenge_id": "pwn-echo"})[1]
    second = live_server.call("POST", "/api/v1/instances", {"team_id": "b", "challenge_id": "pwn-echo"})[1]
    for instance in (first, second):
        wait_until(
            lambda: live_server.call("GET", f"/api/v1/instances/{instance['id']}")[1]["status"] != "pending", 60,
            what="the TCP instance",
        )
        assert live_server.call("GET", f"/api/v1/instances/{instance['id']}")[1]["status"] == "running"
    hosts = [i["endpoint"][len("tls://"):].rsplit(":", 1) for i in (first, second)]
    assert {port for _, port in hosts} == {str(traefik_proxy.tls_port)}  # one shared port

    # each hostname reaches its own instance: each greets with its own flag
    greeting, echo = tls_session(traefik_proxy.tls_port, hosts[0][0])
    assert greeting.strip() == f"hello from {first['flag']}" and echo == b"ping\n"
    greeting, echo = tls_session(traefik_proxy.tls_port, hosts[1][0], send=b"second\n")
    assert greeting.strip() == f"hello from {second['flag']}" and echo == b"second\n"
    assert first["flag"] != second["flag"]
    assert live_server.call("DELETE", f"/api/v1/instances/{first['id']}")[0] == 204
    # and the first hostname no longer reaches anything
    def gone():
        try:
            tls_session(traefik_proxy.tls_port, hosts[0][0], timeout=2)
            return False
        except (OSError, ssl.SSLError):
            return True

    wait_until(gone, 10, what="the first TCP route to go")


def test_operator_certificate_is_served_for_tcp_instances(app, api, live_server, traefik_proxy, tcp_port_setting):
    """The instance-domain certificate comes from settings (PEM here; file paths work the same)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from ctfhost_plugin_traefik import config_cache, default_certificate

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "*.pwn-cert.localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    worker = f"tcp-{uuid.uuid4().hex[:6]}"
    api.post("/api/v1/workers", json={"id": worker, "address": "127.0.0.1", "runtime": "fake"})
    api.post("/api/v1/challenges", json={"id": "pwn-cert", "name": "c", "runtime": "fake", "image": "i", "port": 1,
                                         "protocol": "tcp"})
    app.config["CTFHOST_TRAEFIK_DEFAULT_CERT_FILE"] = cert_pem
    app.config["CTFHOST_TRAEFIK_DEFAULT_KEY_FILE"] = key_pem
    try:
        config_cache.invalidate()
        instance = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "pwn-cert"}).get_json()
        run_jobs(app, worker)
        host = instance["endpoint"][len("tls://"):].rsplit(":", 1)[0]

        def served():
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            try:
                with socket.create_connection(("127.0.0.1", traefik_proxy.tls_port), timeout=3) as raw:
                    with context.wrap_socket(raw, server_hostname=host) as conn:
                        return x509.load_der_x509_certificate(conn.getpeercert(binary_form=True))
            except (OSError, ssl.SSLError):
                return None

        wait_until(lambda: (c := served()) is not None and c.subject == name, 10, what="Traefik to serve the certificate")
    finally:
        app.config.pop("CTFHOST_TRAEFIK_DEFAULT_CERT_FILE")
        app.config.pop("CTFHOST_TRAEFIK_DEFAULT_KEY_FILE")
        config_cache.invalidate()
    assert default_certificate.default_certificate()["certFile"].startswith("-----BEGIN CERTIFICATE-----")
