"""/api/v1/challenges: create, read, change and delete, with every validation error."""

import json
import re

import pytest

from ctfhost.models import Challenge, Instance
from ctfhost.worker.queue import destroy_job_id, job_status
from ctfhost.testing import run_jobs

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def challenge_body(**changes):
    body = {"id": "web-babysql", "name": "Baby SQL", "runtime": "fake", "image": "ctf/babysql:1", "port": 8080}
    body.update(changes)
    return {key: value for key, value in body.items() if value is not ...}


def field_errors(response):
    """The {field: [messages]} of a 422 answer, checking its envelope."""
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == 422 and body["status"] == "Unprocessable Entity"
    errors = body["errors"]["json"]
    # the message names every bad field too
    for field in errors:
        assert field in body["message"]
    return errors


def test_create_returns_201_with_defaults(api):
    response = api.post("/api/v1/challenges", json=challenge_body())
    assert response.status_code == 201
    body = response.get_json()
    assert ISO_Z.match(body.pop("created_at")) and ISO_Z.match(body.pop("updated_at"))
    assert body == {
        "id": "web-babysql",
        "name": "Baby SQL",
        "runtime": "fake",
        "image": "ctf/babysql:1",
        "port": 8080,
        "protocol": "http",
        "cpu_count": 1,
        "memory_mb": 512,
        "ttl_seconds": None,
        "max_renewals": None,
        "flag_template": None,
        "extra_config": "{}",
        "services": {},
        "expose": [],
        "status": "active",
        "version": None,
        "description": None,
        "metadata": {},
    }


def test_create_with_every_field(api):
    extra = json.dumps({"readiness_timeout": 5})
    response = api.post(
        "/api/v1/challenges",
        json=challenge_body(cpu_count=4, memory_mb=2048, ttl_seconds=600, extra_config=extra, port=65535),
    )
    assert response.status_code == 201
    body = response.get_json()
    assert (body["cpu_count"], body["memory_mb"], body["ttl_seconds"], body["port"]) == (4, 2048, 600, 65535)
    assert json.loads(body["extra_config"]) == {"readiness_timeout": 5}
    assert api.get("/api/v1/challenges/web-babysql").get_json() == body


@pytest.mark.parametrize("slug", ["a1", "web-100", "0day", "x-y-z"])
def test_create_accepts_slugs(api, slug):
    assert api.post("/api/v1/challenges", json=challenge_body(id=slug)).status_code == 201


def test_create_duplicate_is_409(api):
    assert api.post("/api/v1/challenges", json=challenge_body()).status_code == 201
    response = api.post("/api/v1/challenges", json=challenge_body(name="Other"))
    assert response.status_code == 409
    body = response.get_json()
    assert body["code"] == 409 and "web-babysql" in body["message"] and "already exists" in body["message"]
    assert api.get("/api/v1/challenges/web-babysql").get_json()["name"] == "Baby SQL"


@pytest.mark.parametrize(
    "field, value",
    [
        ("id", "Web"),
        ("id", "web_sql"),
        ("id", "-web"),
        ("id", "web-"),
        ("id", "a"),
        ("id", ""),
        ("id", "a" * 64),
        ("id", "web sql"),
        ("id", 12),
        ("name", ""),
        ("name", None),
        ("image", ""),
        ("runtime", ""),
        ("port", 0),
        ("port", 70000),
        ("port", 65536),
        ("port", -1),
        ("port", "80"),
        ("port", True),
        ("port", 80.5),
        ("port", None),
        ("cpu_count", 3),
        ("cpu_count", 0),
        ("cpu_count", "1"),
        ("memory_mb", 100),
        ("memory_mb", 4096),
        ("memory_mb", 512.0),
        ("ttl_seconds", 0),
        ("ttl_seconds", -1),
        ("ttl_seconds", "60"),
        ("ttl_seconds", False),
        ("extra_config", "{not json"),
        ("extra_config", "[1, 2]"),
        ("extra_config", '"text"'),
        ("extra_config", "42"),
        ("extra_config", ["env"]),
        ("extra_config", 5),
        ("extra_config", '{"readiness_timeout": -1}'),
        ("extra_config", '{"readiness_timeout": "soon"}'),
        ("extra_config", '{"unknown_option": 1}'),
    ],
)
def test_create_rejects_a_bad_field_by_name(api, field, value):
    response = api.post("/api/v1/challenges", json=challenge_body(**{field: value}))
    errors = field_errors(response)
    assert list(errors) == [field]
    assert Challenge.select().count() == 0


def test_extra_config_messages_say_what_is_wrong(api):
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(extra_config="{nope")))
    assert "JSON" in errors["extra_config"][0]
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(extra_config="[1]")))
    assert "object" in errors["extra_config"][0]
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(extra_config='{"colour": 1}')))
    assert "colour" in errors["extra_config"][0]


@pytest.mark.parametrize("field", ["id", "name", "runtime", "image", "port"])
def test_create_requires_field(api, field):
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(**{field: ...})))
    assert errors == {field: ["Missing data for required field."]}


def test_create_unknown_runtime_names_the_installed_ones(api):
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(runtime="kubevirt")))
    message = errors["runtime"][0]
    assert "kubevirt" in message
    assert "docker" in message and "fake" in message
    assert "installed" in message


def test_create_unknown_field_is_422(api):
    errors = field_errors(api.post("/api/v1/challenges", json=challenge_body(difficulty="hard")))
    assert errors == {"difficulty": ["Unknown field."]}


def test_create_names_every_bad_field_at_once(api):
    response = api.post(
        "/api/v1/challenges",
        json=challenge_body(id="Bad Slug", port=0, cpu_count=3, memory_mb=100, ttl_seconds=-1,
                            extra_config="[]", runtime="nope", color="red"),
    )
    errors = field_errors(response)
    assert set(errors) == {"id", "port", "cpu_count", "memory_mb", "ttl_seconds", "extra_config", "runtime", "color"}


@pytest.mark.parametrize("body", [[], "text", None])
def test_create_needs_a_json_object(api, body):
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 422
    assert Challenge.select().count() == 0


def test_extra_config_object_is_stored_as_a_json_string(api):
    response = api.post("/api/v1/challenges", json=challenge_body(extra_config={"readiness_timeout": 3}))
    assert response.status_code == 201
    assert json.loads(response.get_json()["extra_config"]) == {"readiness_timeout": 3}


def test_blank_extra_config_is_an_empty_object(api):
    response = api.post("/api/v1/challenges", json=challenge_body(extra_config=""))
    assert response.status_code == 201
    assert response.get_json()["extra_config"] == "{}"


def test_ttl_null_means_the_global_default(api):
    response = api.post("/api/v1/challenges", json=challenge_body(ttl_seconds=None))
    assert response.status_code == 201
    assert response.get_json()["ttl_seconds"] is None


# -- reading --------------------------------------------------------------------


def test_list_is_empty_then_sorted_by_id(api):
    assert api.get("/api/v1/challenges").get_json() == []
    for slug in ("web-b", "pwn-a", "crypto-c"):
        api.post("/api/v1/challenges", json=challenge_body(id=slug))
    listed = api.get("/api/v1/challenges").get_json()
    assert [c["id"] for c in listed] == ["crypto-c", "pwn-a", "web-b"]
    assert all(c["runtime"] == "fake" for c in listed)


def test_get_one(api):
    created = api.post("/api/v1/challenges", json=challenge_body()).get_json()
    response = api.get("/api/v1/challenges/web-babysql")
    assert response.status_code == 200
    assert response.get_json() == created


def test_get_unknown_is_404(api):
    response = api.get("/api/v1/challenges/nope")
    assert response.status_code == 404
    body = response.get_json()
    assert body["code"] == 404 and "nope" in body["message"]


# -- changing -------------------------------------------------------------------


@pytest.fixture
def created(api):
    response = api.post(
        "/api/v1/challenges", json=challenge_body(ttl_seconds=900, extra_config='{"readiness_timeout": 5}')
    )
    assert response.status_code == 201
    return response.get_json()


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "Renamed"},
        {"port": 9090},
        {"image": "ctf/babysql:2", "cpu_count": 2},
        {"memory_mb": 1024},
        {"ttl_seconds": None},
        {"ttl_seconds": 60},
        {"extra_config": "{}"},
    ],
)
def test_patch_changes_only_the_fields_given(api, created, changes):
    response = api.patch("/api/v1/challenges/web-babysql", json=changes)
    assert response.status_code == 200
    body = response.get_json()
    expected = dict(created, **changes)
    for key in expected:
        if key != "updated_at":
            assert body[key] == expected[key], key
    assert body["updated_at"] >= created["updated_at"]
    assert api.get("/api/v1/challenges/web-babysql").get_json() == body


def test_patch_keeps_defaults_it_was_not_given(api):
    api.post("/api/v1/challenges", json=challenge_body(cpu_count=4, memory_mb=2048))
    body = api.patch("/api/v1/challenges/web-babysql", json={"name": "x"}).get_json()
    assert (body["cpu_count"], body["memory_mb"]) == (4, 2048)


@pytest.mark.parametrize(
    "field, value",
    [
        ("port", 0),
        ("port", 70000),
        ("port", "80"),
        ("port", True),
        ("cpu_count", 3),
        ("memory_mb", 100),
        ("ttl_seconds", 0),
        ("ttl_seconds", -1),
        ("extra_config", "not json"),
        ("extra_config", "[]"),
        ("extra_config", '{"unknown_option": true}'),
        ("runtime", "nope"),
        ("name", ""),
        ("name", None),
        ("image", None),
        ("difficulty", "hard"),
    ],
)
def test_patch_validates_like_create(api, created, field, value):
    errors = field_errors(api.patch("/api/v1/challenges/web-babysql", json={field: value}))
    assert list(errors) == [field]
    assert api.get("/api/v1/challenges/web-babysql").get_json() == created


def test_patch_unknown_runtime_names_the_installed_ones(api, created):
    errors = field_errors(api.patch("/api/v1/challenges/web-babysql", json={"runtime": "nope"}))
    assert "fake" in errors["runtime"][0] and "docker" in errors["runtime"][0]


def test_patch_checks_extra_config_against_the_new_runtime(api, created):
    # "fail" is an option of the fake runtime; the docker runtime does not know it
    api.patch("/api/v1/challenges/web-babysql", json={"extra_config": '{"fail": "x"}'})
    errors = field_errors(api.patch("/api/v1/challenges/web-babysql", json={"runtime": "docker"}))
    assert "extra_config" in errors


@pytest.mark.parametrize("new_id", ["other-id", "web-babysql"])
def test_patch_cannot_change_the_id(api, created, new_id):
    errors = field_errors(api.patch("/api/v1/challenges/web-babysql", json={"id": new_id}))
    assert list(errors) == ["id"]
    assert api.get("/api/v1/challenges/other-id").status_code == 404
    assert api.get("/api/v1/challenges/web-babysql").status_code == 200


def test_patch_read_only_fields_are_refused(api, created):
    errors = field_errors(api.patch("/api/v1/challenges/web-babysql", json={"created_at": "2020-01-01T00:00:00Z"}))
    assert list(errors) == ["created_at"]


def test_patch_unknown_is_404(api):
    response = api.patch("/api/v1/challenges/nope", json={"name": "x"})
    assert response.status_code == 404
    assert "nope" in response.get_json()["message"]


# -- deleting -------------------------------------------------------------------


def test_delete_is_204_then_404(api, created):
    response = api.delete("/api/v1/challenges/web-babysql")
    assert response.status_code == 204
    assert response.data == b""
    assert api.get("/api/v1/challenges/web-babysql").status_code == 404
    assert api.delete("/api/v1/challenges/web-babysql").status_code == 404


def test_delete_unknown_is_404(api):
    response = api.delete("/api/v1/challenges/nope")
    assert response.status_code == 404
    assert "nope" in response.get_json()["message"]


def test_delete_with_active_instances_is_409(api, created, worker_id, redis_server):
    launched = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-babysql"})
    assert launched.status_code == 201
    for query in ("", "?force=false"):
        response = api.delete("/api/v1/challenges/web-babysql" + query)
        assert response.status_code == 409
        body = response.get_json()
        assert "active instance" in body["message"] and "force=true" in body["message"]
    assert api.get("/api/v1/challenges/web-babysql").status_code == 200
    assert api.get(f"/api/v1/instances/{launched.get_json()['id']}").get_json()["status"] == "pending"


def test_delete_after_instances_ended_is_204(api, created, worker_id, redis_server):
    instance = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-babysql"}).get_json()
    assert api.delete(f"/api/v1/instances/{instance['id']}").status_code == 204
    assert api.delete("/api/v1/challenges/web-babysql").status_code == 204
    # the instance's history outlives its challenge
    assert api.get(f"/api/v1/instances/{instance['id']}").get_json()["status"] == "destroyed"


def test_delete_force_destroys_active_instances_first(app, api, created, worker_id, redis_server):
    first = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-babysql"}).get_json()
    run_jobs(app, worker_id)
    assert api.get(f"/api/v1/instances/{first['id']}").get_json()["status"] == "running"
    second = api.post("/api/v1/instances", json={"team_id": "team-2", "challenge_id": "web-babysql"}).get_json()
    assert f"ctfhost-{first['id']}" in api.get("/api/v1/traefik/config").get_data(as_text=True)

    response = api.delete("/api/v1/challenges/web-babysql?force=true")
    assert response.status_code == 204
    assert api.get("/api/v1/challenges/web-babysql").status_code == 404
    for instance in (first, second):
        assert api.get(f"/api/v1/instances/{instance['id']}").get_json()["status"] == "destroyed"
    assert f"ctfhost-{first['id']}" not in api.get("/api/v1/traefik/config").get_data(as_text=True)
    assert job_status(destroy_job_id(first["id"])) is not None

    run_jobs(app, worker_id)
    assert first["id"] in app.fake_runtime.destroyed
    assert first["id"] not in app.fake_runtime.servers
    assert Instance.select().where(Instance.status.in_(["pending", "running"])).count() == 0


def test_delete_force_without_instances(api, created):
    assert api.delete("/api/v1/challenges/web-babysql?force=true").status_code == 204


def test_delete_force_must_be_a_boolean(api, created):
    response = api.delete("/api/v1/challenges/web-babysql?force=maybe")
    assert response.status_code == 422
    assert "force" in response.get_json()["errors"]["query"]
