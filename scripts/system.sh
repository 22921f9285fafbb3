#!/usr/bin/env bash
# System parts ctfhost's demo and tests need: packages, Redis, Docker, PostgreSQL.
# Usage: scripts/system.sh deps|services [RECORD]|postgres|stop-started [RECORD]
# Installs and starts things only when run as root; otherwise says what to do.
# What it starts is listed in $STATE_DIR/started, and also in RECORD when given
# (make demo passes .demo/system-started), so `stop-started RECORD` stops only
# what that run started and says what it leaves running.
set -euo pipefail

STATE_DIR="${CTFHOST_STATE_DIR:-${TMPDIR:-/tmp}/ctfhost-system}"
STARTED="$STATE_DIR/started"
# The Debian packages the demo and the tests use (python3-venv: `python3 -m venv` needs it on Debian;
# chromium: the admin pages' browser test drives it with Playwright, which cannot download a browser here)
PACKAGES="docker.io redis-server busybox-static postgresql python3-venv docker-registry chromium"
mkdir -p "$STATE_DIR"

say() { echo "ctfhost: $*" >&2; }
is_root() { [ "$(id -u)" -eq 0 ]; }
need_root() {
    say "$1"
    say "run this as root, or do it yourself: $2"
    exit 1
}

missing_packages() {
    local missing=""
    command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
    command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
    [ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || missing="$missing busybox-static"
    ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$missing postgresql"
    # a local registry for the image pull tests (no public registry is reachable)
    command -v docker-registry >/dev/null 2>&1 || missing="$missing docker-registry"
    [ -x /usr/bin/chromium ] || missing="$missing chromium"
    # Debian's python3 has the venv module but not ensurepip, without which `python3 -m venv` fails
    python3 -c 'import ensurepip' >/dev/null 2>&1 || missing="$missing python3-venv"
    echo $missing
}

deps() {
    local missing
    missing="$(missing_packages)"
    [ -z "$missing" ] && return 0
    if ! is_root; then
        need_root "missing system packages: $missing" "sudo apt-get update && sudo apt-get install -y $missing"
    fi
    say "installing $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
}

RECORD=""
mark_started() {
    echo "$1" >>"$STARTED"
    if [ -n "$RECORD" ]; then echo "$1" >>"$RECORD"; fi
}

start_redis() {
    if redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then return 0; fi
    command -v redis-server >/dev/null || need_root "redis-server is not installed" "sudo apt-get install -y redis-server"
    say "starting redis-server on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --pidfile "$STATE_DIR/redis.pid" --logfile "$STATE_DIR/redis.log"
    for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -h 127.0.0.1 ping >/dev/null
    mark_started redis
}

start_docker() {
    if docker info >/dev/null 2>&1; then return 0; fi
    is_root || need_root "the Docker engine is not running" "sudo dockerd &   (or: sudo systemctl start docker)"
    say "starting dockerd"
    nohup dockerd >"$STATE_DIR/dockerd.log" 2>&1 &
    echo $! >"$STATE_DIR/dockerd.pid"
    for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { tail -20 "$STATE_DIR/dockerd.log" >&2; say "dockerd did not start"; exit 1; }
    mark_started docker
}

services() {
    start_redis
    start_docker
}

# Prints a PostgreSQL URL for tests, starting the cluster and creating the role and database.
postgres() {
    # stdout carries only the URL (make test-postgresql reads it): the tools' chatter goes to stderr
    prepare_postgres >&2
    echo "postgresql://ctfhost:ctfhost@127.0.0.1:5432/ctfhost_test"
}

prepare_postgres() {
    local version
    version="$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)"
    [ -n "$version" ] || need_root "PostgreSQL is not installed" "sudo apt-get install -y postgresql"
    if ! pg_lsclusters -h 2>/dev/null | grep -q " online"; then
        is_root || need_root "PostgreSQL is not running" "sudo pg_ctlcluster $version main start"
        pg_lsclusters -h | grep -q "^$version main" || pg_createcluster "$version" main >/dev/null
        say "starting PostgreSQL $version"
        pg_ctlcluster "$version" main start
        mark_started "postgres:$version"
    fi
    if is_root; then
        su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='ctfhost'\"" | grep -q 1 ||
            su postgres -c "psql -qc \"CREATE ROLE ctfhost LOGIN PASSWORD 'ctfhost'\""
        su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='ctfhost_test'\"" | grep -q 1 ||
            su postgres -c "createdb -O ctfhost ctfhost_test"
    fi
}

stop_one() {
    case "$1" in
        redis) say "stopping redis-server"; redis-cli -h 127.0.0.1 shutdown nosave >/dev/null 2>&1 || true ;;
        docker)
            say "stopping dockerd"
            kill "$(cat "$STATE_DIR/dockerd.pid")" 2>/dev/null || true
            for _ in $(seq 1 60); do kill -0 "$(cat "$STATE_DIR/dockerd.pid")" 2>/dev/null || break; sleep 0.5; done ;;
        postgres:*) say "stopping PostgreSQL"; pg_ctlcluster "${1#postgres:}" main stop || true ;;
    esac
}

# Stops what RECORD (default: everything this script started) lists, then says what it leaves running.
stop_started() {
    local record="${1:-$STARTED}" what
    if [ -f "$record" ]; then
        while read -r what; do
            [ -n "$what" ] || continue
            stop_one "$what"
            if [ "$record" != "$STARTED" ] && [ -f "$STARTED" ]; then
                grep -vxF "$what" "$STARTED" >"$STARTED.new" || true
                mv "$STARTED.new" "$STARTED"
            fi
        done <"$record"
        rm -f "$record"
    fi
    if redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
        say "leaving redis-server on 127.0.0.1:6379 running: it was running before (not started by this run)"
    fi
    if docker info >/dev/null 2>&1; then
        say "leaving dockerd running: it was running before (not started by this run)"
    fi
}

case "${1:-}" in
    deps) deps ;;
    services)
        RECORD="${2:-}"
        if [ -n "$RECORD" ]; then mkdir -p "$(dirname "$RECORD")"; fi
        services ;;
    postgres) postgres ;;
    stop-started) stop_started "${2:-}" ;;
    *) echo "usage: $0 deps|services [RECORD]|postgres|stop-started [RECORD]" >&2; exit 2 ;;
esac
