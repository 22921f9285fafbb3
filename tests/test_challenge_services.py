"""Challenges of several services through the API: the fields, every validation error, the limits, what teams see."""

import json

import pytest

from ctfhost.models import Challenge
from ctfhost.testing import FakeOptions

from test_api_challenges import challenge_body as fake_challenge_body
from test_api_challenges import field_errors


def challenge_body(**changes):
    """A docker challenge (the fake runtime runs no services); validation only, nothing is launched."""
    return fake_challenge_body(**{"runtime": "docker", **changes})

DB = {"image": "ctf/db:1", "environment": {"POSTGRES_PASSWORD": "s3cret"}, "command": ["postgres", "-N", "10"]}


def test_services_are_stored_with_defaults_and_returned(api):
    body = challenge_body(services={"db": DB, "bot": {"image": "ctf/bot:2"}})
    # sent as written (the test client's json= sorts keys)
    response = api.post("/api/v1/challenges", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert sorted(created["services"]) == ["bot", "db"]
    # kept in the order given: the order the services start in
    assert list(Challenge.get_by_id("web-babysql").service_specs) == ["db", "bot"]
    assert created["services"]["db"] == {**DB, "cpu_count": 1, "memory_mb": 512, "expose": [], "options": {}}
    assert created["services"]["bot"]["expose"] == [] and created["expose"] == []
    assert api.get("/api/v1/challenges/web-babysql").get_json()["services"] == created["services"]


def test_a_challenge_without_services_has_empty_ones(api):
    created = api.post("/api/v1/challenges", json=challenge_body()).get_json()
    assert created["services"] == {} and created["expose"] == []


def test_services_can_be_patched_and_removed(api):
    api.post("/api/v1/challenges", json=challenge_body())
    response = api.patch("/api/v1/challenges/web-babysql", json={"services": {"db": DB}})
    assert response.status_code == 200 and list(response.get_json()["services"]) == ["db"]
    response = api.patch("/api/v1/challenges/web-babysql", json={"services": {}})
    assert response.status_code == 200 and response.get_json()["services"] == {}


@pytest.mark.parametrize("services, path, message", [
    ({"main": DB}, ("main", "name"), "`main` is the challenge's own service"),
    ({"Db": DB}, ("Db", "name"), "is not a valid service name: a DNS label"),
    ({"1db": DB}, ("1db", "name"), "starting with a letter"),
    ({"db-": DB}, ("db-", "name"), "a DNS label"),
    ({"d" * 64: DB}, ("d" * 64, "name"), "1-63"),
    ({"db": {}}, ("db", "image"), "Missing data for required field."),
    ({"db": "ctf/db:1"}, ("db", "_schema"), "Must be an object"),
    ({"db": {**DB, "memory_mb": 300}}, ("db", "memory_mb"), "Must be one of: 512, 1024, 2048."),
    ({"db": {**DB, "cpu_count": 3}}, ("db", "cpu_count"), "Must be one of: 1, 2, 4."),
    ({"db": {**DB, "command": "postgres -N 10"}}, ("db", "command"), "Not a valid list."),
    ({"db": {**DB, "environment": {"A B": "x"}}}, ("db", "environment"), "Not a valid environment variable name."),
    ({"db": {**DB, "environment": {"A": 1}}}, ("db", "environment"), "Not a valid string."),
    ({"db": {**DB, "expose": [{"port": 80}]}}, ("db", "expose"), "Missing data for required field."),
    ({"db": {**DB, "expose": [{"name": "x", "port": 0}]}}, ("db", "expose"), "greater than or equal to 1"),
    ({"db": {**DB, "expose": [{"name": "x", "port": 80, "protocol": "udp"}]}}, ("db", "expose"), "Must be one of: http, tcp."),
    ({"db": {**DB, "privileged": True}}, ("db", "privileged"), "Unknown field."),
])
def test_bad_services_name_the_service_and_the_field(api, services, path, message):
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(services=services)))
    service, field = path
    assert message in str(errors["services"][service][field]), errors
    assert api.get("/api/v1/challenges/web-babysql").status_code == 404  # nothing created


def test_bad_images_and_runtime_options_of_a_service_are_named(api):
    services = {"db": {**DB, "image": "not an image!"}, "bot": {"image": "ctf/bot:1", "options": {"no_such_option": 1}}}
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(services=services)))
    assert "image" in errors["services"]["db"]
    assert "unknown key 'no_such_option'" in str(errors["services"]["bot"]["options"])


def test_a_runtime_that_does_not_declare_services_refuses_them(api):
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(runtime="fake", services={"db": DB})))
    assert "the fake runtime does not run challenges of several services" in str(errors["services"])


@pytest.mark.parametrize("services, where", [
    ({"db\n": DB}, ("db\n", "name")),
    ({"db": {**DB, "environment": {"FOO\n": "x"}}}, ("db", "environment")),
])
def test_a_final_newline_does_not_pass_the_name_checks(api, services, where):
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(services=services)))
    assert where[1] in errors["services"][where[0]], errors


def test_endpoints_besides_main_are_stored_in_order(api):
    body = challenge_body(services={"bot": {"image": "ctf/bot:2", "expose": [{"name": "admin", "port": 9000}]}},
                          expose=[{"name": "api", "port": 8081, "protocol": "tcp"}])
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()
    got = api.get(f"/api/v1/challenges/{body['id']}").get_json()
    assert got["expose"] == [{"name": "api", "port": 8081, "protocol": "tcp"}]
    assert got["services"]["bot"]["expose"] == [{"name": "admin", "port": 9000, "protocol": "http"}]


def test_a_runtime_that_does_not_declare_endpoints_refuses_them(api, monkeypatch):
    """Not silently unreachable: a runtime must say it publishes them."""
    monkeypatch.setattr(FakeOptions, "supports_endpoints", False)
    body = challenge_body(runtime="fake", expose=[{"name": "api", "port": 8081, "protocol": "tcp"}])
    errors = field_errors(api.post("/api/v1/challenges", json=body))
    assert errors["expose"] == ["the fake runtime exposes no endpoint beside the main port"]
    monkeypatch.setattr(FakeOptions, "supports_endpoints", True)
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()


def test_endpoint_names_are_dns_labels_of_at_most_40_characters(api):
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(
        expose=[{"name": "a" * 41, "port": 8081}, {"name": "Admin", "port": 8082}])))
    assert "Longer than maximum length 40." in str(errors["expose"]["0"]["name"])
    assert "Must be" in str(errors["expose"]["1"]["name"])
    response = api.post("/api/v1/challenges", json=challenge_body(expose=[{"name": "a" * 40, "port": 8081}]))
    assert response.status_code == 201, response.get_json()


def test_readiness_timeout_is_the_instances_not_a_services(api):
    services = {"db": {**DB, "options": {"readiness_timeout": 30}}}
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(services=services)))
    assert "readiness_timeout is the instance's" in str(errors["services"]["db"]["options"])


def test_endpoint_names_are_unique_within_the_challenge(api):
    services = {"db": {**DB, "expose": [{"name": "admin", "port": 5432}, {"name": "main", "port": 5433}]},
                "bot": {"image": "ctf/bot:1", "expose": [{"name": "admin", "port": 9000}]}}
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(
        services=services, expose=[{"name": "admin", "port": 8081}, {"name": "other", "port": 8080}])))
    assert "port 8080 of the main service is exposed twice" in str(errors["expose"])
    assert "endpoint name 'main' is already the main port" in str(errors["services"]["db"]["expose"])
    assert "endpoint name 'admin' is already an endpoint of the main service" in str(errors["services"]["db"]["expose"])
    assert "endpoint name 'admin' is already an endpoint of the main service" in str(errors["services"]["bot"]["expose"])


def test_the_counts_follow_the_settings(api):
    assert api.patch("/api/v1/settings", json={"max_services_per_challenge": 2, "max_endpoints_per_challenge": 1}).status_code == 200
    services = {name: {"image": "ctf/x:1"} for name in ("a", "b", "c")}
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(
        services=services, expose=[{"name": "x", "port": 1}, {"name": "y", "port": 2}])))
    assert "3 services; at most 2 besides `main` (settings: max_services_per_challenge)" in str(errors["services"])
    assert "2 exposed endpoints besides `main`; at most 1 (settings: max_endpoints_per_challenge)" in str(errors["expose"])
    services.pop("c")
    response = api.post("/api/v1/challenges", json=challenge_body(services=services))
    assert response.status_code == 201, response.get_json()


def test_the_settings_default_to_eight_and_are_bounded(api):
    settings = api.get("/api/v1/settings").get_json()
    assert settings["max_services_per_challenge"] == 8 and settings["max_endpoints_per_challenge"] == 8
    errors = field_errors(api.patch("/api/v1/settings", json={"max_services_per_challenge": 33}))
    assert "max_services_per_challenge" in errors


def test_teams_see_service_names_and_endpoints_only(api, team_api):
    services = {"db": {**DB, "environment": {"TOKEN": "hidden"}, "options": {"read_only": True}},
                "bot": {"image": "ctf/bot:2", "command": ["run-bot"]}}
    assert api.post("/api/v1/challenges", json=challenge_body(services=services)).status_code == 201
    team = team_api(3)
    for public in (team.get("/api/v1/challenges/web-babysql").get_json(), team.get("/api/v1/challenges").get_json()[0]):
        assert public["services"] == {"db": {"expose": []}, "bot": {"expose": []}}
        assert public["expose"] == []
    text = team.get("/api/v1/challenges").get_data(as_text=True)
    for secret in ("ctf/db:1", "ctf/bot:2", "s3cret", "postgres", "hidden", "POSTGRES_PASSWORD", "run-bot"):
        assert secret not in text


def test_services_are_documented_in_the_spec(api):
    spec = api.get("/openapi.json").get_json()
    challenge = spec["components"]["schemas"]["Challenge"]["properties"]
    assert challenge["services"]["type"] == "object"
    service = challenge["services"]["additionalProperties"]
    assert service["$ref"].endswith("/Service")
    assert challenge["expose"]["type"] == "array"
    assert "image" in spec["components"]["schemas"]["Service"]["required"]
