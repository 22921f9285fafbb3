"""Bounds on the numbers and sizes callers send, in one place so the API, the CLI and the docs agree.

Every bound keeps a value inside what the database columns and Python's
datetime can hold (a TTL of 10^12 seconds would make every launch fail with
"date value out of range"), and inside what a CTF plausibly needs.
"""

# an instance's lifetime, per challenge or as the default: one second to 30 days
MAX_TTL_SECONDS = 30 * 86400
# renewals a challenge may allow per instance
MAX_RENEWALS = 10_000
# active instances a team may hold at once (settings.max_instances_per_team)
MAX_INSTANCES_PER_TEAM = 10_000
# wait between launches of one challenge by one team (settings.launch_cooldown_seconds)
MAX_COOLDOWN_SECONDS = 86400
# instances one worker may be registered to hold (max_instances)
MAX_WORKER_INSTANCES = 10_000
# pagination: rows per page, and the farthest offset (PostgreSQL's OFFSET is a bigint; 2^63 overflows it)
MAX_PAGE_SIZE = 1000
MAX_OFFSET = 2**31 - 1
# the flag column's width: a template whose flags can be longer is refused when the challenge is saved
MAX_FLAG_LENGTH = 300
# request bodies (CTFHOST_MAX_REQUEST_BYTES overrides): a challenge with a large extra_config fits easily
DEFAULT_MAX_REQUEST_BYTES = 256 * 1024
# how deep a JSON document may nest (request bodies and extra_config); real ones nest a few levels
MAX_JSON_DEPTH = 32
# a challenge's description and its metadata object (as JSON), in characters
MAX_DESCRIPTION_LENGTH = 20_000
MAX_METADATA_LENGTH = 16_384
# the sizes a challenge (or each of its services) may ask for
CPU_COUNTS = (1, 2, 4)
MEMORY_SIZES = (512, 1024, 2048)
# services beside the main one, and exposed endpoints besides `main`, a challenge may declare at most, whatever
# the settings say (settings.max_services_per_challenge / max_endpoints_per_challenge, 8 by default)
MAX_SERVICES = 32
MAX_ENDPOINTS = 32
# an endpoint's name also names its router in Traefik and its Service on Kubernetes (`endpoint-<name>`)
MAX_ENDPOINT_NAME_LENGTH = 40
# a service's command or entrypoint: arguments, and characters of each
MAX_ARGUMENTS = 128
MAX_ARGUMENT_LENGTH = 4096
# a service's environment: variables
MAX_ENVIRONMENT = 128
