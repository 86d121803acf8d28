#!/usr/bin/env bash
# A throw-away PostgreSQL server for tests and CI: one data directory, 127.0.0.1 only.
#
#   scripts/postgres.sh start <dir>   start (initialising <dir> on first use) and print
#                                     `export NAME=value` lines for `eval`
#   scripts/postgres.sh env <dir>     print the export lines of a running server again
#   scripts/postgres.sh stop <dir>    stop it (the files stay; `rm -rf <dir>` afterwards)
#   scripts/postgres.sh status <dir>  exit 0 when it is running
#
# Typical use (.ci/run):
#   eval "$(scripts/postgres.sh start /tmp/convsync-pg)"
#   trap 'scripts/postgres.sh stop /tmp/convsync-pg' EXIT
#
# Exported: CONVSYNC_TEST_PG_{HOST,PORT,USER,PASSWORD,DB,DIR} for the test fixtures and
# DAGSTER_PG_{HOST,PORT,USERNAME,PASSWORD,DB} for deploy/dagster.yaml. Only the export lines
# go to stdout; progress and errors go to stderr.
#
# Binaries: initdb/pg_ctl from $PG_BINDIR, else from PATH, else the newest
# /usr/lib/postgresql/<ver>/bin; if none is found and we are root on Debian/Ubuntu, they are
# installed once with `apt-get install -y postgresql`. PostgreSQL refuses to run as root: as
# root the server runs as $PG_RUN_USER (default: `postgres` if it exists, else a system user
# `convsync-pg` created here). <dir> must then be reachable by that user (e.g. under /tmp).
#
# The server is for tests only: fsync is off, so a machine crash can lose its data.

set -euo pipefail

PG_DB_NAME=convsync
PG_SUPERUSER=convsync

die() {
    echo "postgres.sh: error: $*" >&2
    exit 1
}

say() {
    echo "postgres.sh: $*" >&2
}

usage() {
    echo "usage: $0 {start|stop|status|env} <dir>" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
command=$1
[[ -n $2 ]] || usage
dir=$(realpath -m -- "$2")
data=$dir/data
envfile=$dir/env
logfile=$dir/postgres.log

# --- binaries ---------------------------------------------------------------------------

find_bindir() {
    local candidate
    if [[ -n ${PG_BINDIR:-} ]]; then
        [[ -x $PG_BINDIR/initdb && -x $PG_BINDIR/pg_ctl ]] \
            || die "PG_BINDIR=$PG_BINDIR does not contain initdb and pg_ctl"
        echo "$PG_BINDIR"
        return 0
    fi
    if candidate=$(command -v pg_ctl 2>/dev/null) && command -v initdb >/dev/null 2>&1; then
        # /usr/local/bin/pg_ctl may be a symlink into /usr/lib/postgresql/<ver>/bin: use the
        # real directory so that createdb/psql of the same version are found next to it.
        candidate=$(dirname -- "$(realpath -- "$candidate")")
        if [[ -x $candidate/initdb ]]; then
            echo "$candidate"
            return 0
        fi
        dirname -- "$(command -v pg_ctl)"
        return 0
    fi
    # Debian/Ubuntu keep the server binaries off PATH.
    candidate=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n $candidate && -x $candidate/initdb && -x $candidate/pg_ctl ]]; then
        echo "$candidate"
        return 0
    fi
    return 1
}

install_postgres() {
    [[ $(id -u) -eq 0 ]] \
        || die "PostgreSQL (initdb, pg_ctl) not found and not root, so cannot install it;" \
            "install it (Debian: apt-get install -y postgresql) or set PG_BINDIR"
    command -v apt-get >/dev/null 2>&1 \
        || die "PostgreSQL (initdb, pg_ctl) not found and there is no apt-get to install it;" \
            "install PostgreSQL or set PG_BINDIR"
    say "PostgreSQL not found: installing it with apt-get (once)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends postgresql >&2 \
        || die "apt-get install -y postgresql failed"
}

# --- the unprivileged user --------------------------------------------------------------

run_user=""
as_user() {
    # 9>&-: the server must not inherit the lock on <dir>/.lock and hold it for its lifetime.
    if [[ -z $run_user ]]; then
        "$@" 9>&-
    else
        runuser -u "$run_user" -- "$@" 9>&-
    fi
}

choose_user() {
    if [[ $(id -u) -ne 0 ]]; then
        run_user=""
        return 0
    fi
    run_user=${PG_RUN_USER:-}
    if [[ -z $run_user && -d $data ]]; then
        # An existing data directory belongs to the user that must run it.
        run_user=$(stat -c %U -- "$data")
        [[ $run_user != root && $run_user != UNKNOWN ]] || run_user=""
    fi
    if [[ -z $run_user ]]; then
        if id -u postgres >/dev/null 2>&1; then
            run_user=postgres
        else
            run_user=convsync-pg
        fi
    fi
    if ! id -u "$run_user" >/dev/null 2>&1; then
        say "creating system user $run_user to run PostgreSQL (it refuses to run as root)"
        useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$run_user" \
            || die "could not create user $run_user"
    fi
    [[ $(id -u "$run_user") -ne 0 ]] || die "PG_RUN_USER=$run_user is root; PostgreSQL refuses that"
    command -v runuser >/dev/null 2>&1 || die "runuser (util-linux) is needed to run as $run_user"
}

# --- helpers ----------------------------------------------------------------------------

is_running() {
    [[ -f $data/PG_VERSION ]] && as_user "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1
}

port_in_use() {
    # A successful connect means something listens there.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
    local port tries=0
    while ((tries < 50)); do
        port=$((20000 + RANDOM % 30000))
        if ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
        tries=$((tries + 1))
    done
    die "no free TCP port found on 127.0.0.1"
}

write_env() {
    local port=$1 password=$2 tmp name value
    tmp=$(mktemp "$dir/env.XXXXXX")
    for name in HOST PORT USER PASSWORD DB DIR; do
        case $name in
        HOST) value=127.0.0.1 ;;
        PORT) value=$port ;;
        USER) value=$PG_SUPERUSER ;;
        PASSWORD) value=$password ;;
        DB) value=$PG_DB_NAME ;;
        DIR) value=$dir ;;
        esac
        printf 'export CONVSYNC_TEST_PG_%s=%q\n' "$name" "$value"
        [[ $name == DIR ]] && continue
        [[ $name == USER ]] && name=USERNAME
        printf 'export DAGSTER_PG_%s=%q\n' "$name" "$value"
    done >"$tmp"
    chmod 600 "$tmp"
    mv -f "$tmp" "$envfile"
}

env_value() {
    sed -n "s/^export $1=//p" "$envfile"
}

check_reachable() {
    # As root, the server user must be able to reach and own <dir>.
    [[ -n $run_user ]] || return 0
    if ! runuser -u "$run_user" -- test -x "$(dirname -- "$dir")"; then
        die "user $run_user cannot reach $(dirname -- "$dir") (a parent directory is" \
            "private to root); use a directory under /tmp, e.g. \$(mktemp -d)"
    fi
}

# --- commands ---------------------------------------------------------------------------

cmd_start() {
    local started port password attempt log_size
    started=$(date +%s.%N)
    mkdir -p -- "$dir"
    exec 9>"$dir/.lock"
    flock -w 60 9 || die "another postgres.sh is busy with $dir"

    if [[ -f $data/PG_VERSION && -f $envfile ]] && is_running; then
        say "already running on port $(env_value CONVSYNC_TEST_PG_PORT) ($dir)"
        cat "$envfile"
        return 0
    fi

    if [[ -n $run_user ]]; then
        check_reachable
        chown "$run_user" "$dir"
        chmod 700 "$dir"
    fi

    if [[ ! -f $data/PG_VERSION ]]; then
        [[ ! -e $data ]] || rm -rf -- "$data"
        password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
        local pwfile
        pwfile=$(mktemp "$dir/pw.XXXXXX")
        printf '%s\n' "$password" >"$pwfile"
        [[ -z $run_user ]] || chown "$run_user" "$pwfile"
        say "initialising $data"
        if ! as_user "$bindir/initdb" -D "$data" -U "$PG_SUPERUSER" --pwfile="$pwfile" \
            --auth=scram-sha-256 --encoding=UTF8 --no-locale --no-sync \
            >"$dir/initdb.log" 2>&1; then
            rm -f -- "$pwfile"
            cat "$dir/initdb.log" >&2
            die "initdb failed (log above, also in $dir/initdb.log)"
        fi
        rm -f -- "$pwfile"
        cat >>"$data/postgresql.conf" <<'EOF'

# --- scripts/postgres.sh: a test server, local TCP only, speed over durability ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
        write_env 0 "$password"
        rm -f -- "$dir/.db_created"
    fi
    password=$(env_value CONVSYNC_TEST_PG_PASSWORD)
    [[ -n $password ]] || die "$envfile lost the password; remove $dir and start again"

    # Ports can be taken between the check and the bind: retry with another one.
    port=$(env_value CONVSYNC_TEST_PG_PORT)
    for attempt in 1 2 3 4 5; do
        if [[ -z $port || $port == 0 ]] || port_in_use "$port"; then
            port=$(pick_port)
        fi
        log_size=$(stat -c %s -- "$logfile" 2>/dev/null || echo 0)
        if as_user "$bindir/pg_ctl" -D "$data" -l "$logfile" -o "-p $port" -w -t 60 start \
            >/dev/null 2>&1; then
            break
        fi
        if ((attempt == 5)) || ! tail -c "+$((log_size + 1))" -- "$logfile" \
            | grep -q -i "could not bind\|address already in use"; then
            tail -n 20 "$logfile" >&2 || true
            die "PostgreSQL did not start (log above, also in $logfile)"
        fi
        say "port $port was taken, trying another"
        port=""
    done
    write_env "$port" "$password"

    if [[ ! -f $dir/.db_created ]]; then
        local createdb=$bindir/createdb
        [[ -x $createdb ]] || createdb=$(command -v createdb) \
            || die "createdb (PostgreSQL client) not found next to $bindir/pg_ctl or on PATH"
        if ! PGPASSWORD=$password "$createdb" -h 127.0.0.1 -p "$port" \
            -U "$PG_SUPERUSER" "$PG_DB_NAME" 2>"$dir/createdb.log"; then
            if ! grep -q "already exists" "$dir/createdb.log"; then
                cat "$dir/createdb.log" >&2
                die "could not create database $PG_DB_NAME"
            fi
        fi
        touch "$dir/.db_created"
    fi
    say "running on 127.0.0.1:$port, database $PG_DB_NAME, as ${run_user:-$(id -un)}" \
        "($(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s)"
    cat "$envfile"
}

cmd_stop() {
    if [[ ! -f $data/PG_VERSION ]]; then
        say "no server in $dir: nothing to stop"
        return 0
    fi
    if ! is_running; then
        say "not running ($dir)"
        return 0
    fi
    as_user "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null \
        || die "pg_ctl stop failed; see $logfile"
    say "stopped ($dir)"
}

cmd_status() {
    if is_running; then
        say "running on port $(env_value CONVSYNC_TEST_PG_PORT) ($dir)"
        return 0
    fi
    say "not running ($dir)"
    return 3
}

cmd_env() {
    is_running && [[ -f $envfile ]] || die "no server running in $dir; use: $0 start $dir"
    cat "$envfile"
}

case $command in
start)
    if ! bindir=$(find_bindir); then
        install_postgres
        bindir=$(find_bindir) || die "apt-get installed postgresql but initdb was not found"
    fi
    choose_user
    cmd_start
    ;;
stop | status | env)
    if ! bindir=$(find_bindir); then
        [[ $command == stop ]] && { say "PostgreSQL is not installed: nothing to stop"; exit 0; }
        die "PostgreSQL (pg_ctl) not found"
    fi
    choose_user
    "cmd_$command"
    ;;
*)
    usage
    ;;
esac
