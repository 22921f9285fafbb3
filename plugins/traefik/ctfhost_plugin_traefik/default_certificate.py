"""The default TLS certificate ctfhost hands Traefik in every config.

Without a default certificate in its TLS store, Traefik generates a fresh
one on every configuration reload, which costs it about 80 ms of CPU and
delays every new route by as much. ctfhost therefore always sends one: the
operator's (CTFHOST_TRAEFIK_DEFAULT_CERT_FILE / _KEY_FILE, paths on the
Traefik host), or a self-signed one generated once and kept in the
database so every web process sends the same bytes.
"""

import datetime
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ctfhost.plugin_api import stored_value

from ctfhost.plugin_api import plugin_setting

SETTING_KEY = "traefik.default_certificate"

_lock = threading.Lock()
_cached = {}


def generate():
    """A self-signed EC P-256 certificate: (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ctfhost default certificate")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert_pem, key_pem


def _generated():
    cert_pem, key_pem = generate()
    return {"cert": cert_pem, "key": key_pem}


def _stored():
    # the first process to ask stores one; everyone then reads the same certificate
    value = stored_value(SETTING_KEY, _generated)
    return {"certFile": value["cert"], "keyFile": value["key"]}


def default_certificate():
    """The defaultCertificate entry of Traefik's default TLS store, or None when disabled."""
    mode = str(plugin_setting("TRAEFIK", "DEFAULT_CERTIFICATE", "auto")).lower()
    if mode in ("none", "off", "false", "0"):
        return None
    cert_file, key_file = plugin_setting("TRAEFIK", "DEFAULT_CERT_FILE"), plugin_setting("TRAEFIK", "DEFAULT_KEY_FILE")
    if cert_file and key_file:
        return {"certFile": cert_file, "keyFile": key_file}
    with _lock:
        if "stored" not in _cached:
            _cached["stored"] = _stored()
        return _cached["stored"]
