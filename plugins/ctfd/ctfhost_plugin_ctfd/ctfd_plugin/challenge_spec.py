"""The ctfhost half of a CTFd challenge: reading it from the admin form and sending it to ctfhost.

The admin form sends strings; these become typed values stored on the CTFd
model and the body of ``POST``/``PATCH /api/v1/challenges``. Choices and
ranges (protocol http|tcp, cpu_count 1|2|4, memory_mb 512|1024|2048,
runtime installed, flag template syntax) are ctfhost's to check: its 422 answer is shown in the
admin form.
"""

import json

# field -> (kind, default when creating); None default: optional
FIELDS = {
    "image": (str, None),
    "port": (int, None),
    "protocol": (str, "http"),
    "runtime": (str, "docker"),
    "cpu_count": (int, 1),
    "memory_mb": (int, 512),
    "ttl_seconds": (int, None),
    "max_renewals": (int, None),
    "flag_template": (str, None),
    "extra_config": ("json", "{}"),
}
REQUIRED = ("image", "port")


class InvalidField(ValueError):
    """A form value that cannot be sent to ctfhost; the message names the field."""


def _parse(name, kind, raw):
    if raw is None:
        return None
    if kind is int:
        if isinstance(raw, bool):
            raise InvalidField(f"{name} must be a whole number")
        if isinstance(raw, int):
            return raw
        text = str(raw).strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise InvalidField(f"{name} must be a whole number, not {text!r}") from None
    if kind == "json":
        if isinstance(raw, dict):
            return json.dumps(raw, sort_keys=True)
        text = str(raw).strip()
        if not text:
            return "{}"
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise InvalidField(f"{name} is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise InvalidField(f"{name} must be a JSON object, e.g. {{\"env\": {{\"MODE\": \"easy\"}}}}")
        return text
    text = str(raw).strip()
    return text or None


def parse_fields(data, creating):
    """The ctfhost fields present in `data`, typed; with `creating`, defaults fill the missing ones.

    Raises InvalidField for a value of the wrong shape or a missing required one.
    """
    values = {}
    for name, (kind, default) in FIELDS.items():
        if name in data:
            values[name] = _parse(name, kind, data[name])
            if values[name] is None and default is not None:
                values[name] = default
        elif creating:
            values[name] = default
    for name in REQUIRED:
        if (creating or name in values) and values.get(name) is None:
            raise InvalidField(f"{name} is required for a ctfhost challenge")
    return values


def without_fields(data):
    """`data` without the ctfhost fields: what CTFd's own columns get."""
    return {key: value for key, value in data.items() if key not in FIELDS}


def status_of(state):
    """ctfhost's status for CTFd's challenge state: a hidden challenge is inactive (only ctfhost's admin launches
    it), a visible one active."""
    return "inactive" if state == "hidden" else "active"


def spec(slug, name, values, state=None):
    """The body ctfhost's challenge API takes for this challenge (with its `status` when CTFd's `state` is given)."""
    body = {"id": slug, "name": (name or slug)[:200]}
    if state is not None:
        body["status"] = status_of(state)
    for key in FIELDS:
        body[key] = values.get(key)
    body["extra_config"] = body["extra_config"] or "{}"
    for key in ("cpu_count", "memory_mb", "runtime", "protocol"):
        if body[key] is None:
            body[key] = FIELDS[key][1]
    return body


def values_of(challenge):
    """The ctfhost fields of a stored challenge (any object with those attributes)."""
    return {name: getattr(challenge, name, None) for name in FIELDS}
