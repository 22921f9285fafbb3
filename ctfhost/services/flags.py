"""Per-instance flags: templates such as ``flag{{{hex:16}}}`` drawn fresh for every instance."""

import re
import secrets
import string
import uuid

from ctfhost.limits import MAX_FLAG_LENGTH

# {{ and }} are literal braces; {kind} or {kind:N} is a random part
PART = re.compile(r"\{\{|\}\}|\{([a-z]+)(?::(\d+))?\}|[{}]")

ALPHABETS = {
    "hex": "0123456789abcdef",
    "alnum": string.ascii_letters + string.digits,
    "digits": string.digits,
    "lower": string.ascii_lowercase,
    "upper": string.ascii_uppercase,
}
MAX_LENGTH = 256


def _parts(template):
    """(kind, size) for every random part; raises ValueError naming the problem."""
    parts = []
    for match in PART.finditer(template):
        text = match.group(0)
        if text in ("{{", "}}"):
            continue
        kind, size = match.group(1), match.group(2)
        if kind is None:
            raise ValueError(f"a lone {text!r}: write {text * 2!r} for a literal brace")
        if kind == "uuid":
            if size is not None:
                raise ValueError("{uuid} takes no length")
            parts.append((kind, None))
            continue
        if kind not in ALPHABETS:
            raise ValueError(f"unknown part {{{kind}}}; use hex, alnum, digits, lower, upper (with :N) or uuid")
        if size is None or not 1 <= int(size) <= 128:
            raise ValueError(f"{{{kind}}} needs a length from 1 to 128, e.g. {{{kind}:16}}")
        parts.append((kind, int(size)))
    return parts


def validate(template):
    """Messages for a bad template; empty when fine."""
    if len(template) > MAX_LENGTH:
        return [f"must be at most {MAX_LENGTH} characters"]
    try:
        parts = _parts(template)
    except ValueError as exc:
        return [str(exc)]
    if not parts:
        return ["needs at least one random part, e.g. flag{{{hex:16}}}: a template without one is a static flag"]
    longest = flag_length(template, parts)
    if longest > MAX_FLAG_LENGTH:
        return [f"its flags would be {longest} characters long; at most {MAX_FLAG_LENGTH} fit"]
    return []


def flag_length(template, parts=None):
    """The length of every flag the template draws (each part has a fixed size)."""
    parts = _parts(template) if parts is None else parts
    literal = PART.sub(lambda match: match.group(0)[0] if match.group(0) in ("{{", "}}") else "", template)
    return len(literal) + sum(36 if kind == "uuid" else size for kind, size in parts)


def draw(template):
    """A fresh flag from the template."""
    def replace(match):
        text = match.group(0)
        if text == "{{":
            return "{"
        if text == "}}":
            return "}"
        kind, size = match.group(1), match.group(2)
        if kind == "uuid":
            return str(uuid.uuid4())
        alphabet = ALPHABETS[kind]
        return "".join(secrets.choice(alphabet) for _ in range(int(size)))

    _parts(template)
    return PART.sub(replace, template)
