"""The SDK's models and the server's OpenAPI schemas have the same fields, each model against its schema, both ways."""

import pytest

from ctfhost_client.models import MODELS, Challenge, Event, Instance


@pytest.fixture(scope="module")
def schemas(app):
    spec = app.test_client().get("/openapi.json").get_json()
    return spec["components"]["schemas"]


@pytest.mark.parametrize("model", [m for m in MODELS if m.SCHEMA], ids=lambda model: model.__name__)
def test_model_fields_match_the_openapi_schema(model, schemas):
    assert model.SCHEMA in schemas, f"/openapi.json has no schema {model.SCHEMA!r} for {model.__name__}"
    properties = set(schemas[model.SCHEMA].get("properties", {}))
    fields = set(model.field_names())
    assert not fields - properties, f"{model.__name__} has fields the server's {model.SCHEMA} lacks"
    assert not properties - fields, f"the server's {model.SCHEMA} has properties {model.__name__} lacks"


def test_only_the_event_has_no_schema():
    # the event stream is text/event-stream in the spec: Event is checked against the live JSON instead
    assert [m.__name__ for m in MODELS if not m.SCHEMA] == ["Event"]


def test_every_answer_schema_of_the_sdks_routes_has_a_model(schemas):
    # the answers the SDK reads; request bodies (Launch, Submission, ...) are plain dicts
    answers = {"Challenge", "Instance", "InstanceEndpoint", "Renew", "AccessLink", "Verdict", "Token", "NewToken",
               "Meta", "Caller", "Worker", "WorkerImage", "Settings", "AuditEvent", "Cluster", "Capacity",
               "Operation", "ChallengeStatus", "RestartOperation", "PullState", "FlagSharing", "Endpoint"}
    assert answers <= {model.SCHEMA for model in MODELS}


def test_unknown_fields_are_kept_and_missing_ones_are_none():
    instance = Instance.from_json({"id": "i", "status": "running", "a_newer_field": [1], "endpoints": [{"name": "main"}]})
    assert instance.extra == {"a_newer_field": [1]} and instance.flag is None
    assert instance.to_json()["a_newer_field"] == [1]
    assert instance.endpoint_named("main").name == "main"
    challenge = Challenge.from_json({"id": "web", "expose": [{"name": "admin", "port": 8080, "protocol": "http"}]})
    assert challenge.expose[0].port == 8080
    event = Event.from_sse("5-0", "instance.phase", '{"type": "instance.phase", "data": {"phase": "placed"}}')
    assert event.id == "5-0" and event.phase == "placed"
    assert Event.from_sse("6-0", "message", "not json").data == {"text": "not json"}
