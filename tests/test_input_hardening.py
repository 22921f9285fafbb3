"""Requests that must never crash or bloat the API: sizes, nesting, bounds, content types, methods."""

import json

import pytest

from ctfhost import limits
from ctfhost.models import AuditEvent, Challenge, Instance
from ctfhost.testing import run_jobs

DEEP = "[" * 1000 + "]" * 1000
STATE_CHANGING = [("POST", "/api/v1/instances"), ("POST", "/api/v1/challenges"), ("PATCH", "/api/v1/settings")]


def challenge(**changes):
    body = {"id": "web-hard", "name": "Hard", "runtime": "fake", "image": "ctf/web:1", "port": 8080}
    body.update(changes)
    return body


def json_error(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == status and body["message"]
    return body


def bad_fields(response):
    return json_error(response, 422)["errors"]["json"]


# -- bodies ------------------------------------------------------------------


@pytest.mark.parametrize("method, path", STATE_CHANGING)
def test_deeply_nested_body_without_credentials_is_401(client, method, path):
    response = client.open(path, method=method, data=DEEP, content_type="application/json")
    json_error(response, 401)
    assert AuditEvent.get().actor == "anonymous"


@pytest.mark.parametrize("method, path", STATE_CHANGING)
def test_deeply_nested_body_with_credentials_is_400(api, method, path):
    body = json_error(api._call(method, path, data=DEEP, content_type="application/json"), 400)
    assert "nested" in body["message"]


def test_body_over_the_limit_is_413_before_authentication(app, client, api):
    big = json.dumps({"team_id": 1, "challenge_id": "x", "pad": "a" * (limits.DEFAULT_MAX_REQUEST_BYTES + 1)})
    assert app.config["CTFHOST_MAX_REQUEST_BYTES"] == limits.DEFAULT_MAX_REQUEST_BYTES
    for caller in (client, api):
        response = caller.post("/api/v1/instances", data=big, content_type="application/json")
        assert "at most 262144" in json_error(response, 413)["message"]


def test_body_limit_is_configurable(app, api):
    app.config["MAX_CONTENT_LENGTH"] = 100
    try:
        response = api.post("/api/v1/challenges", json=challenge(name="n" * 200))
        json_error(response, 413)
    finally:
        app.config["MAX_CONTENT_LENGTH"] = app.config["CTFHOST_MAX_REQUEST_BYTES"]


@pytest.mark.parametrize(
    "raw",
    [
        '{"team_id": 1, "challenge_id": "x", "n": ' + "9" * 5000 + "}",
        '{"team_id": 1, "challenge_id": "x", "n": NaN}',
        '{"team_id": 1, "challenge_id": ',
        b'{"team_id": "\xff"}',
    ],
    ids=["5000-digit number", "NaN", "truncated", "not utf-8"],
)
def test_malformed_json_is_400(api, raw):
    response = api.post("/api/v1/instances", data=raw, content_type="application/json")
    assert json_error(response, 400)["message"].startswith("the body is not valid JSON")


def test_long_number_within_parsing_limits_is_a_field_error(api):
    raw = '{"id": "web-hard", "name": "n", "runtime": "fake", "image": "i", "port": ' + "9" * 4000 + "}"
    assert "port" in bad_fields(api.post("/api/v1/challenges", data=raw, content_type="application/json"))


@pytest.mark.parametrize(
    "extra_config",
    [json.dumps(json.loads("[" * 500 + "]" * 500)), '{"a": ' + "[" * 2000 + "]" * 2000 + "}"],
    ids=["500 deep", "2000 deep"],
)
def test_deeply_nested_extra_config_string_is_422(api, extra_config):
    errors = bad_fields(api.post("/api/v1/challenges", json=challenge(extra_config=extra_config)))
    assert "nested more than 32 levels" in errors["extra_config"][0]
    assert not Challenge.select().exists()


def test_deeply_nested_extra_config_object_is_refused(api, tmp_path, app):
    deep = json.loads('{"a": ' + "[" * 40 + "]" * 40 + "}")
    # in a request body the body's own nesting limit answers first
    json_error(api.post("/api/v1/challenges", json=challenge(extra_config=deep)), 400)
    # the same object from a challenge file (YAML/JSON import) is a field error
    path = tmp_path / "challenges.json"
    path.write_text(json.dumps([challenge(extra_config=deep)]))
    result = app.test_cli_runner().invoke(args=["ctfhost", "challenges", "import", str(path)])
    assert result.exit_code != 0 and "Nested more than 32 levels deep" in result.output
    assert not Challenge.select().exists()


def test_json_without_content_type_is_415_naming_it(api):
    response = api.post("/api/v1/challenges", data=json.dumps(challenge()))
    body = json_error(response, 415)
    assert "Content-Type: application/json" in body["message"]
    assert not Challenge.select().exists()
    response = api.post("/api/v1/challenges", data=json.dumps(challenge()), content_type="text/plain")
    assert "text/plain" in json_error(response, 415)["message"]


def test_missing_body_is_still_422_naming_the_fields(api):
    errors = bad_fields(api.post("/api/v1/challenges"))
    assert {"id", "name", "runtime", "image", "port"} <= set(errors)


@pytest.mark.parametrize("body", [None, {}], ids=["no body", "empty object"])
def test_patch_with_nothing_to_change_is_422(api, body):
    assert api.post("/api/v1/challenges", json=challenge()).status_code == 201
    kwargs = {} if body is None else {"json": body}
    for path in ("/api/v1/settings", "/api/v1/challenges/web-hard"):
        response = api.patch(path, **kwargs)
        assert "Nothing to change" in json_error(response, 422)["message"], path


def test_405_carries_an_allow_header(api):
    response = api._call("PUT", "/api/v1/settings", json={})
    json_error(response, 405)
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "PATCH"}
    assert response.headers["Content-Type"] == "application/json"


def test_date_time_fields_are_typed_in_the_spec(client):
    spec = client.get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    found = 0
    for schema in schemas.values():
        for name, prop in schema.get("properties", {}).items():
            if name.endswith("_at") or name in ("at", "since", "until"):
                assert prop.get("type") == "string" and prop.get("format") == "date-time", (name, prop)
                found += 1
    assert found >= 10
    params = [p for path in spec["paths"].values() for op in path.values() if isinstance(op, dict)
              for p in op.get("parameters", []) if p.get("name") in ("since", "until")]
    assert params and all(p["schema"] == {"type": "string", "format": "date-time"} for p in params)


# -- integer bounds ----------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [("ttl_seconds", 2**63), ("ttl_seconds", 10**12), ("ttl_seconds", limits.MAX_TTL_SECONDS + 1),
     ("max_renewals", 2**63), ("max_renewals", 2**31), ("port", 2**63)],
)
def test_out_of_range_challenge_integers_are_422(api, field, value):
    assert field in bad_fields(api.post("/api/v1/challenges", json=challenge(**{field: value})))
    assert api.post("/api/v1/challenges", json=challenge()).status_code == 201
    assert field in bad_fields(api.patch("/api/v1/challenges/web-hard", json={field: value}))


@pytest.mark.parametrize(
    "field, value",
    [("default_ttl_seconds", 10**12), ("default_ttl_seconds", 2**63), ("max_instances_per_team", 2**63),
     ("launch_cooldown_seconds", 10**9), ("tcp_port", 2**63)],
)
def test_out_of_range_settings_are_422(api, field, value):
    assert field in bad_fields(api.patch("/api/v1/settings", json={field: value}))


def test_the_longest_ttl_launches(app, api, worker_id):
    assert api.post("/api/v1/challenges", json=challenge(ttl_seconds=limits.MAX_TTL_SECONDS)).status_code == 201
    assert api.patch("/api/v1/settings", json={"default_ttl_seconds": limits.MAX_TTL_SECONDS}).status_code == 200
    response = api.post("/api/v1/instances", json={"team_id": 7, "challenge_id": "web-hard"})
    assert response.status_code == 201, response.get_json()
    run_jobs(app, worker_id)
    instance = Instance.get_by_id(response.get_json()["id"])
    assert instance.status == "running"
    assert (instance.expires_at - instance.created_at).total_seconds() == limits.MAX_TTL_SECONDS


@pytest.mark.parametrize("path", ["/api/v1/instances", "/api/v1/audit", "/api/v1/flag-sharing", "/api/v1/submissions"])
@pytest.mark.parametrize("offset", [2**63, 2**31, -1])
def test_huge_offsets_are_422(admin, path, offset):
    response = admin.get(f"{path}?offset={offset}")
    if path == "/api/v1/submissions":
        assert response.status_code == 405  # POST only: the other three are the paginated lists
        return
    assert "offset" in json_error(response, 422)["errors"]["query"]


def test_huge_offset_for_a_team_token_is_422(team_api):
    response = team_api(5).get(f"/api/v1/instances?offset={2**63}")
    assert "offset" in json_error(response, 422)["errors"]["query"]


def test_largest_offset_is_an_empty_page(admin):
    for path in ("/api/v1/instances", "/api/v1/audit", "/api/v1/flag-sharing"):
        response = admin.get(f"{path}?offset={limits.MAX_OFFSET}")
        assert response.status_code == 200 and response.get_json() == [], path


# -- flags and images --------------------------------------------------------


def test_flag_template_whose_flags_exceed_the_column_is_refused(app, api, worker_id):
    too_long = "flag{{" + "{hex:128}{hex:128}{hex:40}" + "}}"  # 302 characters
    errors = bad_fields(api.post("/api/v1/challenges", json=challenge(flag_template=too_long)))
    assert "302 characters" in " ".join(errors["flag_template"])
    # exactly the column's width still launches, on SQLite and PostgreSQL alike
    longest = "x" * 44 + "{hex:128}{hex:128}"
    assert api.post("/api/v1/challenges", json=challenge(flag_template=longest)).status_code == 201
    response = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-hard"})
    assert response.status_code == 201
    run_jobs(app, worker_id)
    instance = Instance.get_by_id(response.get_json()["id"])
    assert instance.status == "running" and len(instance.flag) == limits.MAX_FLAG_LENGTH


@pytest.mark.parametrize("image", ["$(id)", "UPPER", "-v /:/host x", "web:1 --privileged", "a//b", "web:tag:more", "x" * 300, ""])
def test_bad_image_references_are_refused_at_creation(api, image):
    errors = bad_fields(api.post("/api/v1/challenges", json=challenge(image=image)))
    assert "image" in errors
    assert not Challenge.select().exists()


@pytest.mark.parametrize(
    "image",
    ["busybox", "ctf/web:1", "registry.example.com:5000/team/web:1.2-rc_3", "127.0.0.1:5000/web",
     "localhost/web@sha256:" + "a" * 64, "docker.io/library/busybox:latest"],
)
def test_good_image_references_are_accepted(api, image):
    assert api.post("/api/v1/challenges", json=challenge(image=image)).status_code == 201


def test_allowed_registries_refuse_other_registries(app, api):
    app.config["CTFHOST_ALLOWED_REGISTRIES"] = "registry.example.com, 127.0.0.1:5000"
    try:
        errors = bad_fields(api.post("/api/v1/challenges", json=challenge(image="busybox:1")))
        assert "docker.io" in errors["image"][0] and "CTFHOST_ALLOWED_REGISTRIES" in errors["image"][0]
        assert api.post("/api/v1/challenges", json=challenge(image="registry.example.com/web:1")).status_code == 201
        assert "image" in bad_fields(api.patch("/api/v1/challenges/web-hard", json={"image": "ghcr.io/x/y:1"}))
        assert api.patch("/api/v1/challenges/web-hard", json={"image": "127.0.0.1:5000/web:2"}).status_code == 200
    finally:
        app.config["CTFHOST_ALLOWED_REGISTRIES"] = ""
