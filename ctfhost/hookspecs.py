"""Every hook ctfhost calls, with what it is called with and what it expects back.

Plugins implement these with ``@hookimpl`` from :mod:`ctfhost.plugin_api`. Arguments keep the same
names across hooks: ``app``, ``challenge``, ``instance``, ``request``,
``worker``, ``runtime``. An implementation may accept any subset of them.

Runtime hooks (``check_runtime``, ``runtime_options``, ``launch``,
``inspect``, ``destroy``, ``reconcile``, ``prepare_image``,
``image_state``) are called only on the plugin that
named the runtime in ``register_runtimes``, so an implementation never checks
whether it is the one meant.
"""

import pluggy

hookspec = pluggy.HookspecMarker("ctfhost")


@hookspec
def register_runtimes():
    """Name the runtimes this plugin provides.

    Called once per plugin, when the plugin is registered (at start, for
    plugins found by entry point). The core remembers which plugin provides
    which runtime and calls that runtime's hooks on that plugin only. Two
    plugins naming the same runtime stop the start with an error naming both.

    :return: a list of runtime names (for example ``["docker"]``).
    """


@hookspec(firstresult=True)
def check_runtime(runtime, worker):
    """Tell whether this host can serve a runtime right now.

    Called by ``flask ctfhost worker`` before it registers, once per runtime
    it would serve. Started without ``--runtime``, the agent serves every
    installed runtime that passes this check and leaves out (with a warning)
    the ones that do not, so a Docker host with the Kubernetes plugins
    installed still works; a runtime named with ``--runtime`` that fails the
    check stops the agent with the reason. Called only on the plugin
    providing ``runtime``. Stops at the first non-None result.

    :param runtime: the runtime name.
    :param worker: the :class:`ctfhost.models.Worker` about to register (not
        saved yet): ``id`` and ``address``.
    :return: ``None`` when the runtime can run here, else a short reason
        (``"cannot reach the Docker engine: ..."``).
    """


@hookspec
def validate_challenge(challenge):
    """Check a challenge before it is created or changed.

    Called in the web process on ``POST`` and ``PATCH /api/v1/challenges``
    and on ``challenges import``, after the core has checked the common
    fields and validated ``extra_config`` against the runtime's
    :func:`runtime_options` schema, with the row not yet saved. Called on the
    plugin providing ``challenge.runtime`` and on every plugin that provides
    no runtime (a policy plugin); never on another runtime's plugin.

    :param challenge: the unsaved :class:`ctfhost.models.Challenge`.
    :return: ``None`` when fine, else a dict mapping a field name (usually
        ``"extra_config"``) to a list of messages; the core answers 422 with
        every message from every plugin.
    """


@hookspec(firstresult=True)
def runtime_options(runtime):
    """Declare the ``extra_config`` keys a runtime accepts, as a marshmallow schema.

    Called once per runtime, the first time the core validates a challenge of
    that runtime, on the plugin providing ``runtime`` only. The core adds its
    own keys (:class:`ctfhost.plugin_api.CoreOptions`: ``readiness_timeout``),
    refuses every undeclared key with 422 naming it, and reports each field's
    errors. Stops at the first non-None result.

    :param runtime: the runtime name.
    :return: a subclass of :class:`ctfhost.plugin_api.RuntimeOptions`, or
        ``None`` when the runtime takes only the core's keys.
    """


@hookspec(firstresult=True)
def launch(challenge, instance, worker, timeout):
    """Start an instance and say where it listens.

    Called in a worker's launch job for a pending instance, on the plugin
    providing ``challenge.runtime`` only. It must be idempotent: an instance already started by an earlier attempt of
    the same job is replaced or reused, never duplicated. It labels what it
    creates with the instance, challenge and team so :func:`reconcile` and
    :func:`destroy` can find it. Stops at the first non-None result.

    :param challenge: the :class:`ctfhost.models.Challenge`; ``cpu_count``,
        ``memory_mb``, ``port``, ``image`` and ``options`` (from
        ``extra_config``) say what to run.
    :param instance: the pending :class:`ctfhost.models.Instance`. When the
        challenge has a ``flag_template``, ``instance.flag`` holds this
        instance's own flag: hand it to the challenge (the docker runtime sets
        the environment variable ``FLAG``), never print it in logs.
    :param worker: the :class:`ctfhost.models.Worker` running the job; its
        ``address`` is how the proxy reaches this host.
    :param timeout: seconds the instance has to become ready, computed once by
        the core (the challenge's ``readiness_timeout`` option, else
        ``CTFHOST_READINESS_TIMEOUT_SECONDS``); a runtime that waits for
        readiness itself gives up after it.
    :return: a :class:`ctfhost.plugin_api.Backend`. Raise
        :class:`ctfhost.plugin_api.LaunchError` for a failure to show the
        player (bad image, exit), :class:`ctfhost.plugin_api.TransientError`
        for one worth retrying.
    """


@hookspec(firstresult=True)
def inspect(instance, worker):
    """Tell whether an instance's resources are still alive.

    Called by the launch job while it waits for the backend to accept
    connections, so a container that exits fails the launch at once with its
    reason instead of at the readiness timeout. Called on the plugin
    providing ``instance.runtime`` only. Stops at the first non-None result.

    :param instance: the :class:`ctfhost.models.Instance`.
    :param worker: the :class:`ctfhost.models.Worker` holding it.
    :return: a :class:`ctfhost.plugin_api.RuntimeState`, or ``None`` when the
        runtime cannot tell.
    """


@hookspec(firstresult=True)
def destroy(instance, worker):
    """Remove everything a runtime created for an instance.

    Called in a worker's destroy job after delete, restart and expiry, when a
    launch fails, and by reconcile for instances whose resources it found
    dead. Called on the plugin providing ``instance.runtime`` only. It must
    be idempotent: resources already gone are not an error. Stops at the
    first non-None result.

    :param instance: the :class:`ctfhost.models.Instance` (any status).
    :param worker: the :class:`ctfhost.models.Worker` that holds it.
    :return: ``True`` once removed.
    """


@hookspec(firstresult=True)
def reconcile(worker, runtime, instances):
    """Bring a runtime's resources on this worker in line with the database.

    Called when a worker agent starts and then periodically, once per runtime
    it serves, on the plugin providing ``runtime`` only. The plugin removes
    every resource it created on this worker for ``runtime`` whose instance
    is not in ``instances``, and reports which of ``instances`` have lost
    their resources. Stops at the first non-None result.

    :param worker: the :class:`ctfhost.models.Worker` reconciling.
    :param runtime: the runtime name being reconciled.
    :param instances: the active :class:`ctfhost.models.Instance` rows this
        worker holds for ``runtime``.
    :return: a list of instance ids whose resources are gone (the core marks
        running ones ``error``).
    """


@hookspec(firstresult=True)
def prepare_image(runtime, image, worker):
    """Make ``image`` available to ``runtime`` on ``worker`` ahead of launches (pull it).

    Called in a pull job on that worker's queue: when a challenge is
    created, activated or changes image, when an operator asks (``POST
    /api/v1/challenges/{id}/pull``), when a worker registers (for every
    active challenge of its runtimes), and in a launch whose worker does not
    hold the image yet (``image_state`` said ``"unpulled"``). Called on the
    plugin providing ``runtime`` only. Stops at the first non-None result.

    :param runtime: the runtime name.
    :param image: the image reference, as a challenge or service names it.
    :param worker: the :class:`ctfhost.models.Worker` whose job calls it.
    :return: ``True`` once the image is there. Raise
        :class:`ctfhost.plugin_api.LaunchError` with the reason (the engine's
        message) when it cannot be; ``None``: the runtime does not pre-pull.
    """


@hookspec(firstresult=True)
def image_state(runtime, image, worker):
    """Whether ``worker`` holds ``image`` for ``runtime`` now.

    Called in a launch job before ``launch``, on the plugin providing
    ``runtime`` only. Stops at the first non-None result.

    :param runtime: the runtime name.
    :param image: the image reference.
    :param worker: the :class:`ctfhost.models.Worker` running the job.
    :return: ``"pulled"`` or ``"unpulled"``; ``None`` when the runtime
        cannot tell.
    """


@hookspec
def route(instance, action):
    """Publish or withdraw an instance's route in the proxy.

    Called with ``action="publish"`` in the launch job once the instance has
    a backend (possibly before it is ready), again with ``"publish"`` when a
    routed instance is renewed (its ``expires_at`` moved), and with
    ``action="withdraw"`` as soon as an instance stops being active: delete,
    restart, expiry or error, in whichever process makes that change. Every
    proxy plugin answers; it must not block on the proxy here.

    :param instance: the :class:`ctfhost.models.Instance`, with ``backend``,
        ``hostname`` and ``status`` up to date.
    :param action: ``"publish"`` or ``"withdraw"``.
    :return: ignored.
    """


@hookspec
def wait_routed(instance, timeout):
    """Block until the proxy serves an instance's hostname.

    Called in the launch job after the backend accepts connections and
    before the instance is marked ``running``, so a running instance answers
    through the proxy at once. Every proxy plugin answers.

    :param instance: the :class:`ctfhost.models.Instance` being launched.
    :param timeout: seconds to wait at most.
    :return: ignored. Raise :class:`ctfhost.plugin_api.LaunchError` when the
        proxy did not take the route in time.
    """


@hookspec(firstresult=True)
def authorize(request, instance):
    """Decide whether a request may reach an instance.

    Called on every forward-auth request from the proxy, with the instance
    found from ``X-Forwarded-Host``. A proxy that checks cookies itself (the
    Traefik plugin's default) asks only about the requests it cannot decide. The core's default implementation is
    registered ``trylast``; a plugin answering first takes over. Stops at the
    first non-None result.

    :param request: the Flask request (headers include ``X-Forwarded-Host``,
        ``X-Forwarded-Uri``, ``X-Forwarded-Method``, cookies).
    :param instance: the active :class:`ctfhost.models.Instance` for the host.
    :return: a :class:`ctfhost.plugin_api.AccessDecision`.
    """


@hookspec
def collect_weights(challenge):
    """Report per-team weights for a challenge.

    Called on ``GET /api/v1/challenges/{id}/weights`` (a scoreboard polls
    it) for challenges whose scoring depends on what happens inside
    instances (king of the hill, attack-defense services). Every plugin may
    answer.

    :param challenge: the :class:`ctfhost.models.Challenge`.
    :return: a dict mapping team id to a number, or ``None``; the core sums
        the numbers per team across plugins.
    """


@hookspec
def register_blueprints(app, api):
    """Add API routes or pages.

    Called once in ``create_app`` after the core's blueprints are
    registered. Register flask-smorest blueprints with
    ``api.register_blueprint`` so they appear in the OpenAPI spec.

    :param app: the Flask application.
    :param api: the :class:`flask_smorest.Api`.
    :return: ignored.
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``flask ctfhost`` group.

    Called once when the CLI group is built.

    :param cli: the :class:`click.Group` behind ``flask ctfhost``.
    :return: ignored.
    """
