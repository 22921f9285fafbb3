"""How the API reads request bodies: strict JSON, bounded, with clear errors."""

from flask.json.provider import DefaultJSONProvider
from flask_smorest import abort
from webargs import core as webargs_core
from webargs.flaskparser import FlaskParser, is_json_request

from ctfhost import jsontext


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, reading request bodies through jsontext (deep nesting is a 400, not a crash)."""

    def loads(self, s, **kwargs):
        return jsontext.loads(s)


class ArgumentsParser(FlaskParser):
    """webargs' parser, strict about JSON bodies.

    A body sent without `Content-Type: application/json` is a 415 naming the
    problem (webargs would ignore it and report every field missing); a body
    that is not acceptable JSON (malformed, nested too deep, a 5000-digit
    number) is a 400.
    """

    def load_json(self, req, schema):
        data = req.get_data(cache=True)
        if not data:
            return webargs_core.missing
        if not is_json_request(req):
            abort(415, message=f"send the body as JSON with Content-Type: application/json (got {req.mimetype or 'none'!r})")
        try:
            return jsontext.loads(data)
        except ValueError as exc:
            abort(400, message=f"the body is not valid JSON: {exc}", errors={"json": {"_schema": [str(exc)]}})
