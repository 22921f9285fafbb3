"""What the SDK's tests share besides fixtures: the scenario, challenge and token helpers, quick retries."""

import uuid
from dataclasses import dataclass

from ctfhost.testing import ADMIN_TOKEN, API_KEY
from ctfhost_client import AdminClient, Client, RetryPolicy

TEAM = "7"
CHALLENGE = "sdk-web"
FLAG_TEMPLATE = "flag{{{hex:16}}}"
# quick retries: tests wait for the server, not for backoff
FAST = RetryPolicy(attempts=4, backoff=0.05, max_backoff=0.2, total_seconds=10)


@dataclass
class Scenario:
    url: str
    worker_id: str
    challenge_id: str
    team_id: str
    token: str

    def team_client(self, **kwargs):
        kwargs.setdefault("retry", FAST)
        return Client(self.url, self.token, **kwargs)

    def key_client(self, **kwargs):
        kwargs.setdefault("retry", FAST)
        return AdminClient(self.url, api_key=API_KEY, **kwargs)

    def admin_client(self, **kwargs):
        kwargs.setdefault("retry", FAST)
        return AdminClient(self.url, ADMIN_TOKEN, **kwargs)


def create_challenge(api, slug=CHALLENGE, **changes):
    body = {"id": slug, "name": slug, "runtime": "fake", "image": "fake/web", "port": 80, "ttl_seconds": 900,
            "flag_template": FLAG_TEMPLATE}
    body.update(changes)
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def mint_token(admin, team_id=TEAM, **fields):
    response = admin.post("/api/v1/tokens", json={"team_id": team_id, "name": "sdk test", **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["token"]



def random_uuid():
    return str(uuid.uuid4())
