"""The challenge form: what it shows of a challenge, and how its fields become the API's request body.

The body then goes through the API's own schemas and services, so the form
shows exactly the errors a REST caller would get, each beside its field.
"""

import json

from marshmallow import ValidationError

from ctfhost.api.challenges import ChallengePatchSchema, ChallengeSchema
from ctfhost.services import challenges as service
from ctfhost.services.errors import Conflict, Invalid

REQUIRED = ("id", "name", "runtime", "image", "port")
TEXT = ("id", "name", "runtime", "image", "protocol", "status")
NULLABLE_TEXT = ("flag_template", "version", "description")
INTEGERS = ("port", "cpu_count", "memory_mb")
NULLABLE_INTEGERS = ("ttl_seconds", "max_renewals")
# JSON the form shows in a text area, and its value when left empty
JSON_FIELDS = {"extra_config": "{}", "services": {}, "expose": [], "metadata": {}}
FIELDS = TEXT + NULLABLE_TEXT + INTEGERS + NULLABLE_INTEGERS + tuple(JSON_FIELDS)


def values_of(challenge):
    """The form's fields filled from a challenge (JSON pretty-printed, empty objects left blank)."""
    values = {}
    for name in FIELDS:
        value = getattr(challenge, name)
        if name in JSON_FIELDS:
            try:
                parsed = json.loads(value or "null")
            except ValueError:
                parsed = value
            value = json.dumps(parsed, indent=2, sort_keys=True) if parsed else ""
        values[name] = "" if value is None else str(value)
    return values


def _integer(text):
    try:
        return int(text)
    except ValueError:
        return text  # the schema says "Not a valid integer."


def request_body(form, creating):
    """(the request body the form stands for, {field: [errors]} found before the schema: JSON that does not parse).

    On create an empty field is left out (required fields get the schema's
    "Missing data for required field.", others their defaults); on edit every
    field is sent, an empty optional one as null (or its empty JSON).
    """
    body, errors = {}, {}
    for name in FIELDS:
        if name == "id" and not creating:
            continue
        text = form.get(name, "")
        text = text if name in JSON_FIELDS or name == "description" else text.strip()
        if not text.strip():
            if creating and (name in REQUIRED or name in JSON_FIELDS or name in ("protocol", "status", *INTEGERS)):
                continue
            if name in NULLABLE_TEXT or name in NULLABLE_INTEGERS:
                body[name] = None
            elif name in JSON_FIELDS:
                body[name] = JSON_FIELDS[name]
            elif name not in REQUIRED:
                continue
            else:
                body[name] = text
            continue
        if name in INTEGERS or name in NULLABLE_INTEGERS:
            body[name] = _integer(text)
        elif name in JSON_FIELDS and name != "extra_config":  # extra_config is JSON text in the API too
            try:
                body[name] = json.loads(text)
            except ValueError as exc:
                errors[name] = [f"Not valid JSON: {exc}."]
        else:
            body[name] = text
    return body, errors


def save(form, challenge_id=None):
    """Create (challenge_id None) or change a challenge from the form: (challenge, {}, status) or
    (None, {field: errors}, status), status being what the API would answer."""
    creating = challenge_id is None
    body, errors = request_body(form, creating)
    schema = ChallengeSchema() if creating else ChallengePatchSchema(partial=True)
    try:
        data = schema.load(body)
    except ValidationError as exc:
        errors = {**exc.messages, **errors}
    if errors:
        return None, errors, 422
    try:
        if creating:
            return service.create_challenge(data), {}, 201
        return service.update_challenge(challenge_id, data), {}, 200
    except Invalid as exc:
        return None, (exc.errors or {}).get("json") or {"_schema": [exc.message]}, exc.status
    except Conflict as exc:
        return None, {"id" if creating else "_schema": [exc.message]}, exc.status


def flat_errors(messages, prefix=""):
    """A field's messages as lines: nested ones ({"web": {"image": [...]}}) as "web › image: ..."."""
    if isinstance(messages, str):
        return [f"{prefix}{messages}"]
    if isinstance(messages, dict):
        lines = []
        for key, value in messages.items():
            label = "" if key == "_schema" else f"{key} › "
            lines.extend(flat_errors(value, prefix + label))
        return lines
    lines = []
    for item in messages or []:
        lines.extend(flat_errors(item, prefix))
    return lines
