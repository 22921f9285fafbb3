"""Every hook, exercised through the Plugins facade as a plugin author would rely on it."""

import importlib.metadata
import logging

import click
import flask
import pluggy
import pytest
from click.testing import CliRunner
from flask.cli import AppGroup
from flask_smorest import Api
from marshmallow import fields, validate

import ctfhost
from ctfhost import hookimpl
from ctfhost.api.auth import Blueprint
from ctfhost.app import BUILTIN_PLUGINS
from ctfhost.hooktypes import CORE_OPTIONS, AccessDecision, Backend, LaunchError, RuntimeOptions, RuntimeState
from ctfhost.models import Challenge, Instance, Worker
from ctfhost.plugins import DuplicateRuntime, Plugins, UnknownPlugin, UnknownRuntime, get_plugins


def make_challenge(runtime="alpha", **fields):
    values = dict(id="web-demo", name="Demo", runtime=runtime, image="demo:1", port=8080, extra_config="{}")
    values.update(fields)
    return Challenge(**values)


def make_instance(runtime="alpha", **fields):
    values = dict(
        id="3f1c2b7e-0000-4000-8000-000000000001",
        team_id="17",
        challenge_id="web-demo",
        runtime=runtime,
        status="pending",
        hostname="9c2e41d0a7b3.web-demo.localhost",
        endpoint="http://9c2e41d0a7b3.web-demo.localhost",
        worker_id="w1",
    )
    values.update(fields)
    return Instance(**values)


def make_worker(**fields):
    values = dict(id="w1", address="10.0.0.7", runtime="alpha,beta")
    values.update(fields)
    return Worker(**values)


def bare_plugins(*plugins, disabled=()):
    """A facade with only the core defaults and `plugins` (name, object) registered."""
    facade = Plugins(disabled=disabled, load_entry_points=False, builtins=BUILTIN_PLUGINS)
    for name, plugin in plugins:
        facade.register(plugin, name=name)
    return facade


class Runtime:
    """A runtime plugin recording every call; it never checks the runtime's name: the core dispatches."""

    def __init__(self, name, port=4000):
        self.name, self.port = name, port
        self.calls = []

    @hookimpl
    def register_runtimes(self):
        self.calls.append(("register_runtimes",))
        return [self.name]

    @hookimpl
    def launch(self, challenge, instance, worker, timeout):
        self.calls.append(("launch", instance.id, timeout))
        return Backend(f"{worker.address}:{self.port}")

    @hookimpl
    def inspect(self, instance, worker):
        self.calls.append(("inspect", instance.id))
        return RuntimeState(False, f"{self.name}: exited with code 3")

    @hookimpl
    def destroy(self, instance, worker):
        self.calls.append(("destroy", instance.id))
        return True

    @hookimpl
    def reconcile(self, worker, runtime, instances):
        self.calls.append(("reconcile", runtime))
        return [instance.id for instance in instances if instance.status == "running"]


# -- register_runtimes -------------------------------------------------------


def test_hook_register_runtimes():
    class Several:
        @hookimpl
        def register_runtimes(self):
            return ["gamma", "beta"]

    class Silent:
        @hookimpl
        def register_runtimes(self):
            return None

    alpha = Runtime("alpha")
    plugins = bare_plugins(("alpha", alpha), ("several", Several()), ("silent", Silent()))
    assert plugins.runtimes() == ["alpha", "beta", "gamma"]  # merged, sorted
    assert plugins.require_runtime("beta") == "beta"
    for _ in range(3):
        plugins.launch(make_challenge(), make_instance(), make_worker(), 5)
    # asked once, when registered; not on every launch
    assert alpha.calls.count(("register_runtimes",)) == 1


def test_two_plugins_claiming_one_runtime_fail_loudly():
    first, second = Runtime("alpha", port=1), Runtime("alpha", port=2)
    plugins = bare_plugins(("first", first))
    with pytest.raises(DuplicateRuntime, match="runtime 'alpha' is provided by two plugins, 'first' and 'second'"):
        plugins.register(second, name="second")
    # the refused plugin is not left half-registered; the first one still answers
    assert plugins.pm.get_plugin("second") is None
    assert plugins.launch(make_challenge(), make_instance(), make_worker(), 5).address == "10.0.0.7:1"


def test_runtime_hooks_reach_only_the_plugin_providing_the_runtime():
    alpha, beta = Runtime("alpha", port=4001), Runtime("beta", port=4002)
    plugins = bare_plugins(("alpha", alpha), ("beta", beta))
    instance = make_instance("alpha")
    plugins.launch(make_challenge("alpha"), instance, make_worker(), 5)
    plugins.inspect(instance, make_worker())
    plugins.destroy(instance, make_worker())
    plugins.reconcile(make_worker(), "alpha", [])
    assert [call[0] for call in alpha.calls] == ["register_runtimes", "launch", "inspect", "destroy", "reconcile"]
    assert beta.calls == [("register_runtimes",)]
    # a plugin registered later is dispatched to as well (the cached callers are rebuilt)
    gamma = Runtime("gamma", port=4003)
    plugins.register(gamma, name="gamma")
    assert plugins.launch(make_challenge("gamma"), make_instance("gamma"), make_worker(), 5).address == "10.0.0.7:4003"
    assert plugins.launch(make_challenge("alpha"), instance, make_worker(), 5).address == "10.0.0.7:4001"
    assert [call[0] for call in gamma.calls] == ["register_runtimes", "launch"]
    plugins.unregister(name="gamma")
    with pytest.raises(UnknownRuntime, match="installed runtimes are alpha, beta"):
        plugins.launch(make_challenge("gamma"), make_instance("gamma"), make_worker(), 5)


def test_hook_check_runtime(app):
    class Fussy:
        @hookimpl
        def register_runtimes(self):
            return ["fussy"]

        @hookimpl
        def check_runtime(self, runtime, worker):
            return f"no fussy engine near {worker.address}"

    class Wrong:
        @hookimpl
        def register_runtimes(self):
            return ["wrong"]

        @hookimpl
        def check_runtime(self, runtime, worker):
            return 42

    plugins = bare_plugins(("alpha", Runtime("alpha")), ("fussy", Fussy()), ("wrong", Wrong()))
    worker = make_worker(address="10.0.0.9")
    assert plugins.check_runtime("alpha", worker) is None  # nobody objects
    assert plugins.check_runtime("fussy", worker) == "no fussy engine near 10.0.0.9"
    with pytest.raises(TypeError):
        plugins.check_runtime("wrong", worker)
    with pytest.raises(UnknownRuntime):
        plugins.check_runtime("nope", worker)


def test_worker_agent_serves_only_runtimes_that_work_here(app):
    from ctfhost.worker.agent import Agent

    class Broken:
        @hookimpl
        def register_runtimes(self):
            return ["broken"]

        @hookimpl
        def check_runtime(self, runtime, worker):
            return "no engine"

    plugins = get_plugins(app)
    plugins.register(Broken(), name="broken-runtime")
    try:
        served = Agent(app, worker_id="probe").usable_runtimes()
        assert "broken" not in served and "fake" in served
        with pytest.raises(RuntimeError, match="runtime 'broken' cannot run on this host: no engine"):
            Agent(app, worker_id="probe", runtimes=["broken"]).usable_runtimes()
        assert Agent(app, worker_id="probe", runtimes=["fake"]).usable_runtimes() == ["fake"]
    finally:
        plugins.unregister(name="broken-runtime")


def test_unknown_runtime_names_installed_runtimes_and_asks_for_the_plugin():
    plugins = bare_plugins(("alpha", Runtime("alpha")), ("beta", Runtime("beta")))
    with pytest.raises(UnknownRuntime) as caught:
        plugins.require_runtime("kata")
    message = str(caught.value)
    assert "'kata'" in message
    assert "installed runtimes are alpha, beta" in message
    assert "is the plugin providing 'kata' installed?" in message
    assert caught.value.installed == ["alpha", "beta"]
    assert isinstance(caught.value, LookupError)


def test_unknown_runtime_when_none_is_installed():
    with pytest.raises(UnknownRuntime, match="installed runtimes are none"):
        bare_plugins().require_runtime("docker")


# -- validate_challenge ------------------------------------------------------


def test_hook_validate_challenge():
    class Strict:
        @hookimpl
        def validate_challenge(self, challenge):
            if challenge.runtime != "alpha":
                return None
            unknown = sorted(set(challenge.options) - {"env"})
            return {"extra_config": [f"unknown key {key!r}" for key in unknown]} if unknown else None

    class Terse:
        @hookimpl
        def validate_challenge(self, challenge):
            return {"extra_config": "alpha wants env"} if "env" not in challenge.options else None

    class BetaRuntime(Runtime):
        @hookimpl
        def validate_challenge(self, challenge):
            self.calls.append(("validate_challenge", challenge.runtime))
            return {"image": "beta images come from the beta registry"}

    beta = BetaRuntime("beta")
    plugins = bare_plugins(("alpha", Runtime("alpha")), ("beta", beta), ("strict", Strict()), ("terse", Terse()))
    assert plugins.validate_challenge(make_challenge(extra_config='{"env": {}}')) == {}
    errors = plugins.validate_challenge(make_challenge(extra_config='{"bogus": 1}'))
    # every plugin's messages, merged per field; a bare string becomes a list item
    assert sorted(errors) == ["extra_config"]
    assert sorted(errors["extra_config"]) == ["alpha wants env", "unknown key 'bogus'"]
    # another runtime's plugin is never asked about an alpha challenge; its own runtime's plugin is
    assert ("validate_challenge", "alpha") not in beta.calls
    assert plugins.validate_challenge(make_challenge(runtime="beta", extra_config='{"env": {}}')) == {
        "image": ["beta images come from the beta registry"]
    }


def test_validate_challenge_answers_422_through_the_api(api):
    body = {"id": "web-bad", "name": "Bad", "runtime": "fake", "image": "x", "port": 80, "extra_config": {"bogus": 1}}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 422, response.get_json()
    (message,) = response.get_json()["errors"]["json"]["extra_config"]
    assert message == "unknown key 'bogus'; the fake runtime accepts: die, echo_headers, endpoints_down, fail, readiness_timeout"


# -- runtime_options ---------------------------------------------------------


def test_hook_runtime_options():
    class AlphaOptions(RuntimeOptions):
        env = fields.Dict(
            keys=fields.String(validate=validate.Length(min=1)), values=fields.String(),
            metadata={"description": "environment variables", "must_be": "an object of strings"},
        )

    class Declaring(Runtime):
        @hookimpl
        def runtime_options(self, runtime):
            self.calls.append(("runtime_options", runtime))
            return AlphaOptions

    alpha = Declaring("alpha")
    plugins = bare_plugins(("alpha", alpha), ("beta", Runtime("beta")))
    assert plugins.option_errors("alpha", {"env": {"A": "1"}, "readiness_timeout": 5}) == []
    assert plugins.option_errors("alpha", {"env": {"A": 1}, "volumes": [], "readiness_timeout": 0}) == [
        "unknown key 'volumes'; the alpha runtime accepts: env, readiness_timeout",
        "env must be an object of strings",  # item errors and marshmallow's own validators speak through must_be
        "readiness_timeout must be a number of seconds between 0 and 3600",
    ]
    assert plugins.option_errors("alpha", {"env": {"": "x"}}) == ["env must be an object of strings"]
    # the schema is asked for once per runtime
    assert alpha.calls.count(("runtime_options", "alpha")) == 1
    # a runtime declaring nothing takes the core's keys only
    assert plugins.option_errors("beta", {"readiness_timeout": 3}) == []
    assert plugins.option_errors("beta", {"env": {}}) == ["unknown key 'env'; the beta runtime accepts: readiness_timeout"]
    assert sorted(plugins.options_schema("beta")().fields) == sorted(CORE_OPTIONS)


def test_runtime_options_returning_the_wrong_type_raises_type_error():
    class Sloppy(Runtime):
        @hookimpl
        def runtime_options(self, runtime):
            return {"env": "an object"}

    with pytest.raises(TypeError, match="expected a RuntimeOptions subclass"):
        bare_plugins(("sloppy", Sloppy("alpha"))).option_errors("alpha", {})


def test_runtime_options_through_the_api(api):
    body = {"id": "web-opt", "name": "Opt", "runtime": "fake", "image": "x", "port": 80}
    response = api.post("/api/v1/challenges", json=body | {"extra_config": {"die": "sometimes", "readiness_timeout": -1}})
    assert response.status_code == 422
    assert response.get_json()["errors"]["json"]["extra_config"] == [
        "die must be true or false", "readiness_timeout must be a number of seconds between 0 and 3600",
    ]
    response = api.post("/api/v1/challenges", json=body | {"extra_config": {"die": True, "readiness_timeout": 2.5}})
    assert response.status_code == 201, response.get_json()


def test_unknown_runtime_answers_422_through_the_api(api):
    body = {"id": "web-kata", "name": "Kata", "runtime": "no-such-runtime", "image": "x", "port": 80}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 422
    (message,) = response.get_json()["errors"]["json"]["runtime"]
    assert "is the plugin providing 'no-such-runtime' installed?" in message


# -- launch ------------------------------------------------------------------


def test_hook_launch():
    alpha, beta = Runtime("alpha", port=4001), Runtime("beta", port=4002)
    plugins = bare_plugins(("alpha", alpha), ("beta", beta))
    instance = make_instance()
    backend = plugins.launch(make_challenge("alpha"), instance, make_worker(), 12.5)
    assert backend == Backend("10.0.0.7:4001")
    assert backend.url == "http://10.0.0.7:4001"
    # only alpha's plugin is asked, with the readiness timeout the core computed
    assert alpha.calls[-1] == ("launch", instance.id, 12.5)
    assert beta.calls == [("register_runtimes",)]


def test_launch_returning_the_wrong_type_raises_type_error():
    class Sloppy:
        @hookimpl
        def register_runtimes(self):
            return ["alpha"]

        @hookimpl
        def launch(self, challenge, instance, worker):
            return "10.0.0.7:4001"

    plugins = bare_plugins(("sloppy", Sloppy()))
    with pytest.raises(TypeError, match="expected a Backend"):
        plugins.launch(make_challenge(), make_instance(), make_worker(), 5)


def test_launch_returning_an_endpoint_that_is_not_a_backend_raises_type_error():
    class Sloppy:
        @hookimpl
        def register_runtimes(self):
            return ["alpha"]

        @hookimpl
        def launch(self, challenge, instance, worker):
            return Backend("10.0.0.7:4001", endpoints={"admin": Backend("10.0.0.7:4002"), "shell": "10.0.0.7:4003"})

    plugins = bare_plugins(("sloppy", Sloppy()))
    with pytest.raises(TypeError, match="launch returned endpoints {'shell': '10.0.0.7:4003'}, expected a Backend"):
        plugins.launch(make_challenge(), make_instance(), make_worker(), 5)


def test_launch_with_no_answer_is_a_launch_error():
    class Mute:
        @hookimpl
        def register_runtimes(self):
            return ["alpha"]

    with pytest.raises(LaunchError, match="no plugin launched runtime 'alpha'"):
        bare_plugins(("mute", Mute())).launch(make_challenge(), make_instance(), make_worker(), 5)


def test_launch_of_an_unknown_runtime_calls_no_plugin():
    alpha = Runtime("alpha")
    plugins = bare_plugins(("alpha", alpha))
    with pytest.raises(UnknownRuntime, match="is the plugin providing 'kata' installed"):
        plugins.launch(make_challenge("kata"), make_instance("kata"), make_worker(), 5)
    assert alpha.calls == [("register_runtimes",)]


def test_launch_errors_reach_the_caller():
    class Broken(Runtime):
        @hookimpl
        def launch(self, challenge, instance, worker):
            raise LaunchError("image 'demo:1' is not on this host")

    with pytest.raises(LaunchError, match="not on this host"):
        bare_plugins(("broken", Broken("alpha"))).launch(make_challenge(), make_instance(), make_worker(), 5)


# -- inspect -----------------------------------------------------------------


def test_hook_inspect():
    plugins = bare_plugins(("alpha", Runtime("alpha")), ("beta", Runtime("beta")))
    assert plugins.inspect(make_instance("alpha"), make_worker()) == RuntimeState(False, "alpha: exited with code 3")
    assert plugins.inspect(make_instance("beta"), make_worker()).reason == "beta: exited with code 3"
    assert plugins.inspect(make_instance("gamma"), make_worker()) is None  # nobody's instance


def test_inspect_returning_the_wrong_type_raises_type_error():
    class Sloppy:
        @hookimpl
        def register_runtimes(self):
            return ["alpha"]

        @hookimpl
        def inspect(self, instance, worker):
            return False

    with pytest.raises(TypeError, match="expected a RuntimeState"):
        bare_plugins(("sloppy", Sloppy())).inspect(make_instance(), make_worker())


# -- destroy -----------------------------------------------------------------


def test_hook_destroy(caplog):
    alpha, beta = Runtime("alpha"), Runtime("beta")
    plugins = bare_plugins(("alpha", alpha), ("beta", beta))
    instance = make_instance("alpha", status="destroyed")
    assert plugins.destroy(instance, make_worker()) is True
    assert plugins.destroy(instance, make_worker()) is True  # idempotent: twice is fine
    assert alpha.calls[1:] == [("destroy", instance.id)] * 2
    assert beta.calls == [("register_runtimes",)]

    with caplog.at_level(logging.WARNING, logger="ctfhost.plugins"):
        assert plugins.destroy(make_instance("gamma"), make_worker()) is False
    assert "is the plugin installed?" in caplog.text
    assert "'gamma'" in caplog.text


# -- reconcile ---------------------------------------------------------------


def test_hook_reconcile():
    alpha, beta = Runtime("alpha"), Runtime("beta")
    plugins = bare_plugins(("alpha", alpha), ("beta", beta))
    running = make_instance(id="a-running", status="running")
    pending = make_instance(id="a-pending", status="pending")
    instances = iter([running, pending])  # any iterable reaches plugins as a list
    assert plugins.reconcile(make_worker(), "alpha", instances) == {"a-running"}
    assert beta.calls == [("register_runtimes",)]  # never asked about alpha
    assert plugins.reconcile(make_worker(), "gamma", []) == set()


# -- prepare_image, image_state -------------------------------------------------


class Puller(Runtime):
    """A runtime that holds images once pulled; "bad" images cannot be pulled."""

    def __init__(self, name):
        super().__init__(name)
        self.held = set()

    @hookimpl
    def prepare_image(self, runtime, image, worker):
        self.calls.append(("prepare_image", runtime, image, worker.id))
        if image.startswith("bad/"):
            raise LaunchError(f"manifest for {image} not found")
        self.held.add(image)
        return True

    @hookimpl
    def image_state(self, runtime, image, worker):
        self.calls.append(("image_state", runtime, image, worker.id))
        return "pulled" if image in self.held else "unpulled"


def test_hook_prepare_image():
    alpha, beta = Puller("alpha"), Puller("beta")
    plugins = bare_plugins(("alpha", alpha), ("beta", beta))
    assert plugins.prepare_image("alpha", "ctf/web:1", make_worker()) is True
    assert alpha.calls[-1] == ("prepare_image", "alpha", "ctf/web:1", make_worker().id)
    assert beta.calls == [("register_runtimes",)]  # never asked about alpha
    with pytest.raises(LaunchError, match="manifest for bad/web:1 not found"):
        plugins.prepare_image("alpha", "bad/web:1", make_worker())
    assert plugins.prepare_image("gamma", "ctf/web:1", make_worker()) is None  # nobody provides gamma
    # a runtime without the hook does not pull ahead
    assert bare_plugins(("plain", Runtime("plain"))).prepare_image("plain", "ctf/web:1", make_worker()) is None


def test_hook_image_state():
    alpha = Puller("alpha")
    plugins = bare_plugins(("alpha", alpha))
    assert plugins.image_state("alpha", "ctf/web:1", make_worker()) == "unpulled"
    plugins.prepare_image("alpha", "ctf/web:1", make_worker())
    assert plugins.image_state("alpha", "ctf/web:1", make_worker()) == "pulled"
    assert bare_plugins(("plain", Runtime("plain"))).image_state("plain", "x", make_worker()) is None


def test_image_hooks_returning_the_wrong_type_raise_type_error():
    class Sloppy(Runtime):
        @hookimpl
        def prepare_image(self, runtime, image, worker):
            return "done"

        @hookimpl
        def image_state(self, runtime, image, worker):
            return "maybe"

    plugins = bare_plugins(("sloppy", Sloppy("alpha")))
    with pytest.raises(TypeError, match="prepare_image returned 'done', expected True or None"):
        plugins.prepare_image("alpha", "x", make_worker())
    with pytest.raises(TypeError, match="image_state returned 'maybe', expected one of pulled, unpulled or None"):
        plugins.image_state("alpha", "x", make_worker())


# -- route -------------------------------------------------------------------


def test_hook_route():
    class Proxy:
        def __init__(self):
            self.seen = []

        @hookimpl
        def route(self, instance, action):
            self.seen.append((instance.hostname, action))
            return "ignored"

    first, second = Proxy(), Proxy()
    plugins = bare_plugins(("first", first), ("second", second))
    instance = make_instance(backend="http://10.0.0.7:4001")
    assert plugins.route(instance, "publish") is None
    plugins.route(instance, "withdraw")
    # every proxy plugin answers, not only the first
    expected = [(instance.hostname, "publish"), (instance.hostname, "withdraw")]
    assert first.seen == expected
    assert second.seen == expected

    with pytest.raises(ValueError, match="'publish' or 'withdraw'"):
        plugins.route(instance, "delete")
    assert len(first.seen) == 2  # refused before any plugin was called


# -- wait_routed -------------------------------------------------------------


def test_hook_wait_routed():
    class Proxy:
        def __init__(self, loaded):
            self.loaded, self.waited = loaded, []

        @hookimpl
        def wait_routed(self, instance, timeout):
            self.waited.append(timeout)
            if not self.loaded:
                raise LaunchError(f"the proxy did not load {instance.hostname} within {timeout:g} s")

    ready, also_ready = Proxy(True), Proxy(True)
    plugins = bare_plugins(("ready", ready), ("also-ready", also_ready))
    plugins.wait_routed(make_instance(), 2.5)
    assert ready.waited == also_ready.waited == [2.5]

    plugins.register(Proxy(False), name="slow")
    with pytest.raises(LaunchError, match="did not load 9c2e41d0a7b3.web-demo.localhost within 2.5 s"):
        plugins.wait_routed(make_instance(), 2.5)


# -- authorize ---------------------------------------------------------------


def test_hook_authorize(app):
    import datetime

    from ctfhost.services import access

    plugins = get_plugins(app)
    instance = make_instance(team_id="17", expires_at=datetime.datetime.utcnow() + datetime.timedelta(hours=1))
    with app.test_request_context("/", headers={"X-Forwarded-Host": instance.hostname}):
        denied = plugins.authorize(flask.request, instance)
    # the core default (trylast): no cookie, no entry
    assert denied.allowed is False and denied.status == 401
    cookie, _ = access.cookie_for(instance)
    with app.test_request_context("/", headers={"X-Forwarded-Host": instance.hostname, "Cookie": f"ctfhost_access={cookie}"}):
        decision = plugins.authorize(flask.request, instance)
    # with the instance's cookie it lets the request through and says who owns it
    assert decision.allowed is True
    assert decision.status == 200
    assert decision.headers == {"X-Ctfhost-Team": "17", "X-Ctfhost-Instance": instance.id}


def test_authorize_plugin_wins_over_the_default(app):
    class TeamCookie:
        @hookimpl
        def authorize(self, request, instance):
            if request.cookies.get("team") == instance.team_id:
                return None  # no opinion: leave it to the next implementation
            return AccessDecision.deny(302, Location="https://ctf.example.org/login")

    plugins = get_plugins(app)
    plugins.register(TeamCookie(), name="team-cookie")
    try:
        instance = make_instance(team_id="17")
        with app.test_request_context("/", headers={"Cookie": "team=99"}):
            denied = plugins.authorize(flask.request, instance)
        with app.test_request_context("/", headers={"Cookie": "team=17"}):
            passed_on = plugins.authorize(flask.request, instance)
    finally:
        plugins.unregister(name="team-cookie")
    assert denied == AccessDecision(False, 302, {"Location": "https://ctf.example.org/login"}, "")
    # None from the plugin: the core default decides (no ctfhost cookie: 401)
    assert not passed_on.allowed and passed_on.status == 401


def test_authorize_default_is_registered_trylast():
    plugins = bare_plugins()
    (impl,) = plugins.pm.hook.authorize.get_hookimpls()
    assert impl.plugin_name == "ctfhost.forward_auth"
    assert impl.trylast


def test_authorize_returning_the_wrong_type_raises_type_error():
    class Sloppy:
        @hookimpl
        def authorize(self, request, instance):
            return True

    with pytest.raises(TypeError, match="expected an AccessDecision"):
        bare_plugins(("sloppy", Sloppy())).authorize(None, make_instance())


def test_authorize_without_defaults_or_plugin_raises_type_error():
    plugins = bare_plugins(disabled=["ctfhost.forward_auth"])
    with pytest.raises(TypeError, match="authorize returned None"):
        plugins.authorize(None, make_instance())


# -- collect_weights ---------------------------------------------------------


class Weights:
    def __init__(self, weights):
        self.weights = weights

    @hookimpl
    def collect_weights(self, challenge):
        return self.weights


def test_hook_collect_weights():
    plugins = bare_plugins(
        ("hill", Weights({1: 30.0, "2": 10})),
        ("services", Weights({"1": 5, "3": 0.5})),
        ("unrelated", Weights(None)),
    )
    # summed per team; 1 and "1" are the same team
    assert plugins.collect_weights(make_challenge()) == {"1": 35.0, "2": 10, "3": 0.5}
    assert bare_plugins().collect_weights(make_challenge()) == {}


def test_collect_weights_through_the_api(app, api):
    created = api.post(
        "/api/v1/challenges", json={"id": "koth-hill", "name": "Hill", "runtime": "fake", "image": "x", "port": 80}
    )
    assert created.status_code == 201, created.get_json()
    plugins = get_plugins(app)
    plugins.register(Weights({7: 2, "8": 1.5}), name="test-hill")
    plugins.register(Weights({"7": 1}), name="test-services")
    try:
        response = api.get("/api/v1/challenges/koth-hill/weights")
    finally:
        plugins.unregister(name="test-hill")
        plugins.unregister(name="test-services")
    assert response.status_code == 200
    assert response.get_json() == {"weights": {"7": 3.0, "8": 1.5}}


# -- register_blueprints -----------------------------------------------------


class Extension:
    """A plugin adding an API route and a command."""

    def __init__(self):
        self.blp = Blueprint("koth", __name__, url_prefix="/api/v1/koth", description="King-of-the-hill standings.")

        @self.blp.route("/standings")
        @self.blp.api_key_required
        @self.blp.response(200)
        def standings():
            """Who holds the hill"""
            return {"standings": []}

    @hookimpl
    def register_blueprints(self, app, api):
        api.register_blueprint(self.blp)

    @hookimpl
    def register_commands(self, cli):
        @cli.command("koth-standings")
        @click.option("--challenge", default="koth-hill")
        def standings(challenge):
            """Print who holds the hill."""
            click.echo(f"nobody holds {challenge}")


def test_hook_register_blueprints():
    from ctfhost.api.server import register_api
    from ctfhost.app import API_DEFAULTS

    app = flask.Flask("plugin-blueprint-test")
    app.config.update(API_DEFAULTS)
    app.config["CTFHOST_API_KEY"] = "k"
    app.extensions["ctfhost.plugins"] = bare_plugins(("koth", Extension()))
    register_api(app)  # what create_app does: core blueprints, then the plugins'
    client = app.test_client()

    spec = client.get("/openapi.json").get_json()
    assert "/api/v1/koth/standings" in spec["paths"]
    assert "/api/v1/challenges" in spec["paths"]
    operation = spec["paths"]["/api/v1/koth/standings"]["get"]
    assert {"ApiKeyAuth": []} in operation["security"]
    assert client.get("/api/v1/koth/standings").status_code == 401
    response = client.get("/api/v1/koth/standings", headers={"x-api-key": "k"})
    assert response.status_code == 200
    assert response.get_json() == {"standings": []}


def test_register_blueprints_with_a_bare_api():
    app = flask.Flask("plugin-bare-api-test")
    app.config.update(API_TITLE="t", API_VERSION="1", OPENAPI_VERSION="3.0.3")
    api = Api(app)
    bare_plugins(("koth", Extension())).register_blueprints(app, api)
    assert "/api/v1/koth/standings" in api.spec.to_dict()["paths"]


# -- register_commands -------------------------------------------------------


def test_hook_register_commands():
    group = AppGroup("ctfhost")
    bare_plugins(("koth", Extension())).register_commands(group)
    assert "koth-standings" in group.commands
    app = flask.Flask("plugin-command-test")
    result = CliRunner().invoke(group, ["koth-standings", "--challenge", "hill-2"], obj=flask.cli.ScriptInfo(create_app=lambda: app))
    assert result.exit_code == 0, result.output
    assert result.output == "nobody holds hill-2\n"


def test_plugins_command_lists_loaded_plugins(app):
    import json

    result = app.test_cli_runner().invoke(args=["ctfhost", "plugins", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    names = {row["name"]: row for row in listing["plugins"]}
    assert names["ctfhost.forward_auth"]["hooks"] == ["authorize"]
    assert "launch" in names["fake-runtime"]["hooks"]
    assert "fake" in listing["runtimes"]


# -- listing, loading, disabling ---------------------------------------------


def test_describe_lists_name_version_and_hooks():
    class Hill(Weights):
        __version__ = "2.3.0"

    rows = bare_plugins(("hill", Hill({}))).describe()
    assert rows == [
        {"name": "ctfhost.forward_auth", "version": ctfhost.__version__, "distribution": None, "hooks": ["authorize"]},
        {"name": "hill", "version": "2.3.0", "distribution": None, "hooks": ["collect_weights"]},
    ]
    runtime_row = bare_plugins(("alpha", Runtime("alpha"))).describe()[0]
    assert runtime_row["name"] == "alpha"
    assert runtime_row["hooks"] == ["destroy", "inspect", "launch", "reconcile", "register_runtimes"]


INSTALLED = sorted(importlib.metadata.entry_points(group="ctfhost"), key=lambda ep: ep.name)


@pytest.mark.parametrize("entry_point", INSTALLED, ids=[ep.name for ep in INSTALLED])
def test_installed_plugins_load_and_are_described(entry_point):
    plugins = Plugins(builtins=BUILTIN_PLUGINS)
    rows = {row["name"]: row for row in plugins.describe()}
    row = rows[entry_point.name]
    assert row["distribution"] == entry_point.dist.name
    assert row["version"] == entry_point.dist.version
    assert row["hooks"]
    plugins.pm.check_pending()  # no implementation of a hook that does not exist


@pytest.mark.parametrize("entry_point", INSTALLED, ids=[ep.name for ep in INSTALLED])
def test_disabled_plugin_is_not_loaded(entry_point):
    plugins = Plugins(disabled=[f" {entry_point.name} ", ""], builtins=BUILTIN_PLUGINS)
    assert plugins.disabled == [entry_point.name]
    assert entry_point.name not in {row["name"] for row in plugins.describe()}
    assert plugins.pm.get_plugin(entry_point.name) is None


def test_disabling_the_docker_plugin_removes_its_runtime():
    plugins = Plugins(disabled=["docker"], builtins=BUILTIN_PLUGINS)
    assert "docker" not in {row["name"] for row in plugins.describe()}
    assert "docker" not in plugins.runtimes()
    with pytest.raises(UnknownRuntime, match="is the plugin providing 'docker' installed"):
        plugins.require_runtime("docker")


def test_an_unknown_disabled_plugin_fails_loudly_with_the_installed_names():
    with pytest.raises(UnknownPlugin) as caught:
        Plugins(disabled=["dockr", "docker"], builtins=BUILTIN_PLUGINS)
    message = str(caught.value)
    assert "CTFHOST_DISABLED_PLUGINS names 'dockr', which is not installed" in message
    for entry_point in INSTALLED:
        assert entry_point.name in message
    assert "ctfhost.forward_auth" in message


def test_an_unknown_disabled_plugin_stops_the_app(test_env):
    from ctfhost.app import create_app

    with pytest.raises(UnknownPlugin, match="'no-such-plugin'"):
        create_app({"CTFHOST_DISABLED_PLUGINS": "traefik, no-such-plugin"})


def test_a_disabled_name_cannot_be_registered_by_hand():
    alpha = Runtime("alpha")
    plugins = bare_plugins(disabled=["alpha"])
    assert plugins.register(alpha, name="alpha") is None
    assert plugins.runtimes() == []


def test_an_implementation_with_a_wrong_argument_is_refused():
    class Typo:
        @hookimpl
        def launch(self, challenge, instance, host):
            return None

    with pytest.raises(pluggy.PluginValidationError, match="host"):
        bare_plugins(("typo", Typo()))
