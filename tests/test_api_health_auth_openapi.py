"""Health, the x-api-key check on every control route, and the OpenAPI spec and Swagger UI."""

import re
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ctfhost import __version__
from ctfhost.testing import API_KEY

# not the REST API: the docs, the Prometheus exposition (its auth: tests/test_metrics.py) and the admin pages
# (tests/test_admin_pages.py)
NOT_API = ("/docs", "/openapi.json", "/static/", "/metrics", "/admin")
PUBLIC = {"/health", "/api/v1/health", "/api/v1/auth/forward", "/api/v1/meta"}


def api_rules(app):
    """(rule, method) for every REST route, health included."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.rule.startswith(NOT_API):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def sample_path(rule):
    """A concrete URL for a rule: a UUID for uuid converters, a slug otherwise."""
    def fill(match):
        converter = match.group(1) or "string"
        return str(uuid.uuid4()) if converter == "uuid" else "some-id"

    return re.sub(r"<(?:(\w+):)?\w+>", fill, rule.rule)


def control_routes(app):
    return [(sample_path(rule), method) for rule, method in api_rules(app) if rule.rule not in PUBLIC]


def assert_error(response, status, message_part=None):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == status
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"]
    if message_part:
        assert message_part in body["message"]
    return body


# -- health -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/api/v1/health"])
def test_health_is_public_and_reports_dependencies(client, redis_server, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "version": __version__, "database": "ok", "redis": "ok"}


@pytest.mark.parametrize("path", ["/health", "/api/v1/health"])
def test_health_answers_503_when_redis_is_down(app, client, path):
    saved = app.extensions["ctfhost.redis"] if "ctfhost.redis" in app.extensions else None
    # port 1 on loopback: nothing listens there
    app.extensions["ctfhost.redis"] = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        response = client.get(path)
    finally:
        if saved is None:
            app.extensions.pop("ctfhost.redis", None)
        else:
            app.extensions["ctfhost.redis"] = saved
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error"
    assert body["database"] == "ok"
    assert body["redis"].startswith("unreachable")


def test_health_answers_503_when_the_database_is_down(client, redis_server, monkeypatch):
    import peewee

    from ctfhost.api import health

    class BrokenDatabase:
        def execute_sql(self, *args, **kwargs):
            raise peewee.OperationalError("unable to open database file")

    monkeypatch.setattr(health, "database", BrokenDatabase())
    response = client.get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error"
    assert "unable to open database file" in body["database"]
    assert body["redis"] == "ok"


# -- the API key ----------------------------------------------------------------


def test_every_control_route_is_covered(app):
    paths = {path for path, _ in control_routes(app)}
    assert any(p.startswith("/api/v1/challenges") for p in paths)
    assert any(p.startswith("/api/v1/instances") for p in paths)
    assert any(p.startswith("/api/v1/workers") for p in paths)
    assert "/api/v1/settings" in paths
    assert "/api/v1/traefik/config" in paths


def test_missing_key_is_401_on_every_control_route(app, client):
    for path, method in control_routes(app):
        response = client.open(path, method=method, json={})
        assert_error(response, 401, "missing credentials: send x-api-key")


def test_wrong_key_is_401_on_every_control_route(app, client):
    for path, method in control_routes(app):
        for key in ("wrong", API_KEY + "x", API_KEY[:-1], " " + API_KEY):
            response = client.open(path, method=method, json={}, headers={"x-api-key": key})
            assert_error(response, 401, "wrong API key")


def test_key_is_checked_before_the_body(client):
    # an invalid body must not tell an unauthenticated caller what is wrong with it
    response = client.post("/api/v1/challenges", json={"id": "Not A Slug"})
    body = assert_error(response, 401)
    assert "errors" not in body


def test_no_configured_key_locks_every_control_route(app, client):
    saved = app.config["CTFHOST_API_KEY"]
    try:
        for locked in (None, ""):
            app.config["CTFHOST_API_KEY"] = locked
            for path, method in control_routes(app):
                for headers in ({}, {"x-api-key": ""}, {"x-api-key": API_KEY}, {"x-api-key": "anything"}):
                    response = client.open(path, method=method, json={}, headers=headers)
                    assert_error(response, 401, "CTFHOST_API_KEY")
            assert client.get("/health").status_code in (200, 503)
    finally:
        app.config["CTFHOST_API_KEY"] = saved


def test_right_key_passes(api):
    assert api.get("/api/v1/challenges").status_code == 200
    assert api.get("/api/v1/challenges", headers={"X-Api-Key": API_KEY}).status_code == 200


def test_unknown_route_and_wrong_method_are_json_errors(client):
    headers = {"x-api-key": API_KEY}
    assert_error(client.get("/api/v1/nothing-here", headers=headers), 404)
    assert_error(client.put("/api/v1/challenges", json={}, headers=headers), 405)


# -- OpenAPI --------------------------------------------------------------------


def spec_path(rule):
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_spec_is_public_and_describes_the_api(spec):
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "ctfhost"
    assert spec["info"]["version"] == __version__


def test_spec_lists_every_route_and_method(app, spec):
    for rule, method in api_rules(app):
        path = spec_path(rule)
        assert path in spec["paths"], f"{path} is not in the OpenAPI spec"
        assert method.lower() in spec["paths"][path], f"{method} {path} is not in the OpenAPI spec"


def test_spec_declares_the_security_schemes(spec):
    schemes = spec["components"]["securitySchemes"]
    assert {k: v for k, v in schemes["ApiKeyAuth"].items() if k != "description"} == {
        "type": "apiKey", "in": "header", "name": "x-api-key",
    }
    assert {k: v for k, v in schemes["AdminToken"].items() if k != "description"} == {
        "type": "apiKey", "in": "header", "name": "X-Admin-Token",
    }
    assert {k: v for k, v in schemes["BearerAuth"].items() if k != "description"} == {"type": "http", "scheme": "bearer"}


def test_protected_operations_require_the_key_and_health_does_not(app, spec):
    for rule, method in api_rules(app):
        operation = spec["paths"][spec_path(rule)][method.lower()]
        if rule.rule in PUBLIC:
            assert operation.get("security") == [], f"{method} {rule.rule} should be public"
            if rule.rule != "/api/v1/auth/forward":  # its 401 is the proxy's answer, not ours
                assert "401" not in operation["responses"]
        else:
            schemes = [name for requirement in operation.get("security", []) for name in requirement]
            assert {"AdminToken", "BearerAuth"} <= set(schemes), f"{method} {rule.rule} does not admit the admin"
            assert "401" in operation["responses"], f"{method} {rule.rule} does not document 401"
            assert "403" in operation["responses"], f"{method} {rule.rule} does not document 403"


def test_operations_document_success_responses_with_schemas(app, spec):
    for rule, method in api_rules(app):
        operation = spec["paths"][spec_path(rule)][method.lower()]
        assert operation.get("summary"), f"{method} {rule.rule} has no summary"
        successes = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
        assert successes, f"{method} {rule.rule} documents no success response"
        for code, response in successes.items():
            if code == "204" or rule.rule == "/api/v1/auth/forward":  # no body; Traefik reads the status
                continue
            if rule.rule == "/api/v1/events":  # a stream of Server-Sent Events
                assert set(response["content"]) == {"text/event-stream"}
                continue
            schema = response["content"]["application/json"].get("schema")
            if rule.rule != "/api/v1/traefik/config":  # free-form Traefik document, shown by example
                assert schema, f"{method} {rule.rule} {code} has no schema"


def ref_name(schema):
    schema = schema.get("items", schema)
    return schema["$ref"].rsplit("/", 1)[-1]


@pytest.mark.parametrize(
    "method, path, request_schema, response_code, response_schema",
    [
        ("post", "/api/v1/challenges", "Challenge", "201", "Challenge"),
        ("patch", "/api/v1/challenges/{challenge_id}", "ChallengePatch", "200", "Challenge"),
        ("get", "/api/v1/challenges", None, "200", "Challenge"),
        ("get", "/api/v1/challenges/{challenge_id}", None, "200", "Challenge"),
        ("post", "/api/v1/instances", "Launch", "201", "Instance"),
        ("get", "/api/v1/instances", None, "200", "Instance"),
        ("get", "/api/v1/instances/{instance_id}", None, "200", "Instance"),
        ("get", "/api/v1/instances/team/{team_id}/{challenge_id}", None, "200", "Instance"),
        ("post", "/api/v1/instances/{instance_id}/restart", None, "200", "Instance"),
        ("post", "/api/v1/instances/{instance_id}/renew", None, "200", "Renew"),
        ("post", "/api/v1/workers", "WorkerRegister", "201", "Worker"),
        ("get", "/api/v1/workers", None, "200", "Worker"),
        ("post", "/api/v1/workers/{worker_id}/heartbeat", "Heartbeat", "200", "Worker"),
        ("get", "/api/v1/settings", None, "200", "Settings"),
        ("patch", "/api/v1/settings", "SettingsPatch", "200", "Settings"),
        ("get", "/api/v1/health", None, "200", "Health"),
        ("get", "/health", None, "200", "Health"),
    ],
)
def test_request_and_response_schemas(spec, method, path, request_schema, response_code, response_schema):
    operation = spec["paths"][path][method]
    if request_schema:
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert ref_name(body) == request_schema
        assert request_schema in spec["components"]["schemas"]
        assert "422" in operation["responses"], f"{method} {path} does not document 422"
    else:
        assert "requestBody" not in operation
    schema = operation["responses"][response_code]["content"]["application/json"]["schema"]
    assert ref_name(schema) == response_schema


@pytest.mark.parametrize(
    "method, path, codes",
    [
        ("post", "/api/v1/challenges", {"409", "422"}),
        ("get", "/api/v1/challenges/{challenge_id}", {"404"}),
        ("patch", "/api/v1/challenges/{challenge_id}", {"404", "422"}),
        ("delete", "/api/v1/challenges/{challenge_id}", {"204", "404", "409"}),
        ("post", "/api/v1/instances", {"404", "409", "422", "503"}),
        ("get", "/api/v1/instances", {"422"}),
        ("get", "/api/v1/instances/{instance_id}", {"404"}),
        ("delete", "/api/v1/instances/{instance_id}", {"204", "404"}),
        ("post", "/api/v1/instances/{instance_id}/restart", {"404", "409", "503"}),
        ("post", "/api/v1/instances/{instance_id}/renew", {"404", "409"}),
        ("get", "/api/v1/instances/team/{team_id}/{challenge_id}", {"404"}),
        ("post", "/api/v1/workers", {"200", "201", "422"}),
        ("post", "/api/v1/workers/{worker_id}/heartbeat", {"404"}),
        ("patch", "/api/v1/settings", {"422"}),
        ("get", "/api/v1/health", {"503"}),
    ],
)
def test_error_responses_are_documented(spec, method, path, codes):
    responses = spec["paths"][path][method]["responses"]
    assert codes <= set(responses), f"{method} {path} documents {sorted(responses)}"
    for code in codes - {"200", "201", "204"}:
        content = responses[code].get("content")
        if content is None:  # flask-smorest documents some errors by reference
            assert "$ref" in responses[code]
        else:
            assert "schema" in content["application/json"]


def test_instance_schema_fields(spec):
    properties = spec["components"]["schemas"]["Instance"]["properties"]
    for name in ("id", "team_id", "challenge_id", "runtime", "status", "endpoint", "expires_at",
                 "started_at", "created_at", "error"):
        assert name in properties
    assert properties["id"]["format"] == "uuid"
    assert properties["status"]["enum"] == ["pending", "running", "destroyed", "expired", "error"]


def test_challenge_schema_fields(spec):
    schema = spec["components"]["schemas"]["Challenge"]
    assert set(schema["required"]) == {"id", "name", "runtime", "image", "port"}
    properties = schema["properties"]
    assert properties["id"]["pattern"] == "^[a-z0-9][a-z0-9-]*[a-z0-9]$"
    assert properties["port"]["minimum"] == 1 and properties["port"]["maximum"] == 65535
    assert properties["cpu_count"]["enum"] == [1, 2, 4]
    assert properties["memory_mb"]["enum"] == [512, 1024, 2048]
    assert properties["extra_config"]["type"] == "string"


def test_instance_list_documents_filters_and_total_header(spec):
    operation = spec["paths"]["/api/v1/instances"]["get"]
    names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert {"team_id", "challenge_id", "status", "limit", "offset"} <= names
    assert "X-Total-Count" in operation["responses"]["200"]["headers"]


def test_cli_and_http_spec_agree(app, spec):
    import json

    result = app.test_cli_runner().invoke(args=["ctfhost", "openapi"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["paths"].keys() == spec["paths"].keys()


# -- Swagger UI -----------------------------------------------------------------


def test_docs_serve_swagger_ui_from_the_app_itself(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "SwaggerUIBundle" in html
    assert '"/openapi.json"' in html
    assert not re.search(r"""(?:src|href|url)\s*[=:(]\s*["']?(?:https?:)?//""", html), "docs load something from outside"
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/"), asset
        loaded = client.get(asset)
        assert loaded.status_code == 200, asset
        assert len(loaded.data) > 1000, asset


def test_docs_assets_do_not_fetch_from_a_cdn(client):
    html = client.get("/docs").get_data(as_text=True)
    for asset in re.findall(r"""src=["']([^"']+\.js)["']""", html):
        script = client.get(asset).get_data(as_text=True)
        # the bundle mentions URLs in comments and docs strings; what matters is
        # that no script or stylesheet is loaded from elsewhere
        assert "unpkg.com" not in script and "cdn.jsdelivr.net" not in script
