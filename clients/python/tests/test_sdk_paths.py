"""Ids go into URL paths as single percent-encoded segments: an id can never reach another route."""

import httpx
import pytest

from ctfhost_client import AdminClient, Client, NotFound

pytestmark = pytest.mark.usefixtures("redis_server")

# ids that would change the path if put in unquoted
HOSTILE = ["..", ".", "x?team_id=9", "x#y", "100%", "sp ace", "é", "..%2Ftokens"]
# ids with a "/": a WSGI server decodes %2F before routing, so these are refused before any request
SLASHED = ["../tokens", "a/b", "sdk-web/status", "/", "../../v1/tokens"]


def recording_client(cls=Client, **kwargs):
    """A client whose requests reach no server: each raw path is recorded and answered with `{}`."""
    seen = []

    def answer(request):
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json={})

    client = cls("http://ctfhost.test", "cth_x", check_version=False, http_transport=httpx.MockTransport(answer),
                 **kwargs)
    return client, seen


def calls(client, hostile):
    """Every SDK call that puts an id into the path, with `hostile` as that id (and the request path it must send)."""
    enc = {"..": "%2E%2E", ".": "%2E", "x?team_id=9": "x%3Fteam_id%3D9", "x#y": "x%23y", "100%": "100%25",
           "sp ace": "sp%20ace", "é": "%C3%A9", "..%2Ftokens": "..%252Ftokens"}.get(hostile)
    yield lambda: client.challenges.get(hostile), f"/api/v1/challenges/{enc}"
    yield lambda: client.instances.get(hostile), f"/api/v1/instances/{enc}"
    yield lambda: client.instances.find(hostile, team_id=hostile), f"/api/v1/instances/team/{enc}/{enc}"
    yield lambda: client.instances.renew(hostile), f"/api/v1/instances/{enc}/renew"
    yield lambda: client.instances.restart(hostile), f"/api/v1/instances/{enc}/restart"
    yield lambda: client.instances.stop(hostile), f"/api/v1/instances/{enc}"
    yield lambda: client.instances.access_link(hostile), f"/api/v1/instances/{enc}/access"
    yield lambda: client.tokens.revoke(hostile), f"/api/v1/tokens/{enc}"
    if isinstance(client, AdminClient):
        yield lambda: client.challenges.update(hostile, name="n"), f"/api/v1/challenges/{enc}"
        yield lambda: client.challenges.delete(hostile), f"/api/v1/challenges/{enc}"
        for action in ("activate", "deactivate", "pull", "restart", "status", "weights"):
            yield (lambda action=action: getattr(client.challenges, action)(hostile)), \
                f"/api/v1/challenges/{enc}/{action}"
        yield lambda: client.workers.delete(hostile), f"/api/v1/workers/{enc}"
        for action in ("cordon", "uncordon", "drain"):
            yield (lambda action=action: getattr(client.workers, action)(hostile)), f"/api/v1/workers/{enc}/{action}"


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("cls", [Client, AdminClient])
def test_every_id_is_one_encoded_path_segment(cls, hostile):
    client, seen = recording_client(cls)
    for call, path in calls(client, hostile):
        del seen[:]
        try:
            call()
        except (TypeError, ValueError, KeyError, AttributeError):
            pass  # `{}` is no model; only the path matters here
        assert seen == [path], (call, seen)


@pytest.mark.parametrize("slashed", SLASHED)
@pytest.mark.parametrize("cls", [Client, AdminClient])
def test_an_id_with_a_slash_is_refused_before_any_request(cls, slashed):
    client, seen = recording_client(cls)
    for call, path in calls(client, slashed):
        try:
            found = call()
        except NotFound as exc:
            assert "not a ctfhost id" in str(exc)
        else:
            assert found is None and "/team/" in path  # instances.find: no such instance
    assert seen == []


def test_a_hostile_id_reaches_no_other_route_of_the_live_server(scenario):
    admin = scenario.admin_client()
    team = scenario.team_client()
    for hostile in ("..", "../tokens", "../../v1/tokens", "..%2Ftokens", scenario.challenge_id + "/status", "."):
        with pytest.raises(NotFound):
            admin.challenges.get(hostile)
        with pytest.raises(NotFound):
            team.instances.get(hostile)
    with pytest.raises(NotFound):
        admin.challenges.delete(scenario.challenge_id + "/..")
    assert admin.challenges.get(scenario.challenge_id).id == scenario.challenge_id  # plain ids still work
