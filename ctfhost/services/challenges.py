"""Registering, changing and removing challenges."""

import peewee

from ctfhost import jsontext
from ctfhost.db import database
from ctfhost.models import ACTIVE, Challenge, Instance, utcnow
from ctfhost.plugins import UnknownRuntime, get_plugins
from ctfhost.services import flags, images, instances, pulls, settings
from ctfhost.services.errors import Conflict, Invalid, NotFound, ServiceError, require_changes

EDITABLE = (
    "name", "runtime", "image", "port", "protocol", "cpu_count", "memory_mb", "ttl_seconds", "max_renewals", "flag_template",
    "extra_config", "services", "expose", "status", "version", "description", "metadata",
)


def list_challenges(status=None):
    query = Challenge.select()
    if status is not None:
        query = query.where(Challenge.status == status)
    return list(query.order_by(Challenge.id))


def set_status(challenge_id, status, destroy_instances=False):
    """Move a challenge to `status`; with `destroy_instances`, also destroy its active instances. Returns it."""
    with database.atomic():
        challenge = get_challenge(challenge_id)
        changed = challenge.status != status
        if changed:
            challenge.status = status
            challenge.updated_at = utcnow()
            challenge.save(only=[Challenge.status, Challenge.updated_at])
    if changed:
        pulls.pull_quietly(challenge)  # activated: the workers fetch its images ahead of the rush
    if destroy_instances:
        for instance in list(Instance.select().where(Instance.challenge_id == challenge.id,
                                                     Instance.status.in_(list(ACTIVE)))):
            instances.destroy_instance(instance.id)
    return challenge


def get_challenge(challenge_id):
    challenge = Challenge.get_or_none(Challenge.id == challenge_id)
    if challenge is None:
        raise NotFound(f"challenge {challenge_id!r} not found")
    return challenge


def validate(challenge):
    """Every problem with `challenge` as {field: [messages]}; empty when fine."""
    errors = {}
    image_problems = images.problems(challenge.image)
    if image_problems:
        errors["image"] = image_problems
    if challenge.flag_template:
        problems = flags.validate(challenge.flag_template)
        if problems:
            errors["flag_template"] = problems
    plugins = get_plugins()
    try:
        plugins.require_runtime(challenge.runtime)
    except UnknownRuntime as exc:
        errors["runtime"] = [str(exc)]
    try:
        options = jsontext.loads(challenge.extra_config or "{}")
    except ValueError as exc:
        errors.setdefault("extra_config", []).append(f"not valid JSON: {exc}")
        return errors
    if not isinstance(options, dict):
        errors.setdefault("extra_config", []).append("must hold a JSON object")
        return errors
    _check_services(challenge, plugins, errors)
    if "runtime" not in errors:
        # the runtime's declared options and the core's (readiness_timeout); unknown keys are refused
        option_errors = plugins.option_errors(challenge.runtime, options)
        if option_errors:
            errors.setdefault("extra_config", []).extend(option_errors)
        for field, messages in plugins.validate_challenge(challenge).items():
            existing = errors.setdefault(field, [])
            if isinstance(existing, dict):  # services: keyed by service name
                existing.setdefault("_schema", []).extend(messages)
            else:
                existing.extend(messages)
    return errors


def _check_services(challenge, plugins, errors):
    """The services and endpoints as a whole: counts within the settings, unique endpoint names and ports, each
    service's image and runtime options. Adds {"services": {name: {field: [...]}}} and {"expose": [...]}."""
    specs, extra = challenge.service_specs, challenge.exposed
    limits_now = settings.get_settings()
    service_errors = {}
    if len(specs) > limits_now["max_services_per_challenge"]:
        errors.setdefault("services", {}).setdefault("_schema", []).append(
            f"{len(specs)} services; at most {limits_now['max_services_per_challenge']} besides `main` "
            "(settings: max_services_per_challenge)")
    endpoints = [("main", "expose", endpoint) for endpoint in extra]
    endpoints += [(name, "services", endpoint) for name, spec in specs.items() for endpoint in spec.get("expose", [])]
    if len(endpoints) > limits_now["max_endpoints_per_challenge"]:
        errors.setdefault("expose", []).append(
            f"{len(endpoints)} exposed endpoints besides `main`; at most {limits_now['max_endpoints_per_challenge']} "
            "(settings: max_endpoints_per_challenge)")
    seen_names = {"main": "the main port"}
    seen_ports = {("main", challenge.port)}
    for service, field, endpoint in endpoints:
        where = "expose" if field == "expose" else f"service {service!r}"
        problem = None
        if endpoint["name"] in seen_names:
            problem = f"endpoint name {endpoint['name']!r} is already {seen_names[endpoint['name']]}"
        elif (service, endpoint["port"]) in seen_ports:
            problem = f"port {endpoint['port']} of {'the main service' if service == 'main' else where} is exposed twice"
        seen_names.setdefault(endpoint["name"], f"an endpoint of {'the main service' if service == 'main' else where}")
        seen_ports.add((service, endpoint["port"]))
        if problem is None:
            continue
        if field == "expose":
            errors.setdefault("expose", []).append(problem)
        else:
            service_errors.setdefault(service, {}).setdefault("expose", []).append(problem)
    known_runtime = challenge.runtime in plugins.runtimes()
    if extra and known_runtime and not getattr(plugins.options_schema(challenge.runtime), "supports_endpoints", False):
        errors.setdefault("expose", []).append(
            f"the {challenge.runtime} runtime exposes no endpoint beside the main port")
    if (specs and known_runtime and any(spec.get("expose") for spec in specs.values())
            and not getattr(plugins.options_schema(challenge.runtime), "supports_endpoints", False)):
        errors.setdefault("services", {}).setdefault("_schema", []).append(
            f"the {challenge.runtime} runtime exposes no endpoint beside the main port")
    if specs and known_runtime and not getattr(plugins.options_schema(challenge.runtime), "supports_services", False):
        errors.setdefault("services", {}).setdefault("_schema", []).append(
            f"the {challenge.runtime} runtime does not run challenges of several services")
    for name, spec in specs.items():
        image_problems = images.problems(spec["image"])
        if image_problems:
            service_errors.setdefault(name, {}).setdefault("image", []).extend(image_problems)
        if "readiness_timeout" in (spec.get("options") or {}):
            service_errors.setdefault(name, {}).setdefault("options", []).append(
                "readiness_timeout is the instance's: set it in the challenge's extra_config")
        if spec.get("options") and known_runtime:
            option_errors = plugins.option_errors(challenge.runtime, spec["options"])
            if option_errors:
                service_errors.setdefault(name, {}).setdefault("options", []).extend(option_errors)
    if service_errors:
        errors.setdefault("services", {}).update(service_errors)


def _raise_if_invalid(challenge):
    errors = validate(challenge)
    if errors:
        raise Invalid({"json": errors})


def create_challenge(data):
    challenge = Challenge(**data)
    _raise_if_invalid(challenge)
    try:
        with database.atomic():
            if Challenge.select().where(Challenge.id == challenge.id).exists():
                raise Conflict(f"challenge {challenge.id!r} already exists")
            challenge.created_at = challenge.updated_at = utcnow()
            challenge.save(force_insert=True)
    except peewee.IntegrityError:
        raise Conflict(f"challenge {challenge.id!r} already exists") from None
    pulls.pull_quietly(challenge)
    return challenge


def update_challenge(challenge_id, changes):
    require_changes(changes)
    with database.atomic():
        challenge = get_challenge(challenge_id)
        before = (pulls.images_of(challenge), challenge.runtime, challenge.status)
        for key, value in changes.items():
            if key not in EDITABLE:
                raise Invalid({"json": {key: ["cannot be changed"]}})
            setattr(challenge, key, value)
        _raise_if_invalid(challenge)
        challenge.updated_at = utcnow()
        challenge.save()
    if (pulls.images_of(challenge), challenge.runtime, challenge.status) != before:
        pulls.pull_quietly(challenge)  # a new image, runtime or activation: the workers fetch it ahead
    return challenge


def restart_instances(challenge_id):
    """Restart every active instance of a challenge (a fixed challenge mid-CTF): the operation record with counts.

    Each gets a new instance as a restart does (new id, new hostnames, full
    TTL). Their launches go through the workers' queues, so each worker
    starts them `--concurrency` at a time.
    """
    challenge = get_challenge(challenge_id)
    ids = [row.id for row in Instance.select(Instance.id).where(
        Instance.challenge_id == challenge.id, Instance.status.in_(list(ACTIVE))).order_by(Instance.id)]
    restarted, problems = 0, []
    for instance_id in ids:
        try:
            instances.restart_instance(instance_id, enforce_limits=False, allow_inactive=True)
        except ServiceError as exc:  # ended meanwhile, no room, queue down: said, and the rest go on
            problems.append(f"{instance_id}: {exc.message}")
            continue
        restarted += 1
    detail = f"{restarted} of {len(ids)} active instance(s) restarted"
    if problems:
        detail += f"; not restarted: {'; '.join(problems[:5])}" + (" ..." if len(problems) > 5 else "")
    status = "failed" if problems and not restarted else ("partial" if problems else "accepted")
    answer = pulls.operation(challenge, "restart", status, detail)
    answer.update(restarted=restarted, failed=len(problems))
    return answer


def collect_weights(challenge_id):
    """Per-team weights the plugins report for a challenge, summed by team."""
    return get_plugins().collect_weights(get_challenge(challenge_id))


def active_instance_count(challenge_id):
    return Instance.select().where(Instance.challenge_id == challenge_id, Instance.status.in_(list(ACTIVE))).count()


def delete_challenge(challenge_id, force=False):
    challenge = get_challenge(challenge_id)
    active = list(
        Instance.select().where(Instance.challenge_id == challenge.id, Instance.status.in_(list(ACTIVE)))
    )
    if active and not force:
        raise Conflict(
            f"challenge {challenge.id!r} has {len(active)} active instance(s); "
            "destroy them first or delete with force=true"
        )
    for instance in active:
        instances.destroy_instance(instance.id)
    with database.atomic():
        if active_instance_count(challenge.id):
            raise Conflict(f"challenge {challenge.id!r} got a new instance while being deleted; try again")
        challenge.delete_instance()


def import_challenges(items):
    """Create or update every challenge in `items`; all or nothing.

    Returns (created ids, updated ids). Raises Invalid with errors keyed by
    list position.
    """
    prepared, errors, seen = [], {}, {}
    for position, data in enumerate(items):
        if data["id"] in seen:
            errors[position] = {"id": [f"{data['id']!r} is also challenge {seen[data['id']]} of this import"]}
            continue
        seen[data["id"]] = position
        existing = Challenge.get_or_none(Challenge.id == data["id"])
        if existing is None:
            challenge = Challenge(**data)
        else:
            challenge = existing
            for key, value in data.items():
                if key != "id":
                    setattr(challenge, key, value)
        problems = validate(challenge)
        if problems:
            errors[position] = problems
        prepared.append((challenge, existing is None))
    if errors:
        raise Invalid(errors, message="Some challenges are invalid; nothing was imported.")
    created, updated = [], []
    now = utcnow()
    with database.atomic():
        for challenge, is_new in prepared:
            challenge.updated_at = now
            if is_new:
                challenge.created_at = now
                challenge.save(force_insert=True)
                created.append(challenge.id)
            else:
                challenge.save()
                updated.append(challenge.id)
    return created, updated
