# Sourced by scripts/test and scripts/bench-ingest: starts a throwaway PostgreSQL cluster from
# the system's server binaries (initdb + pg_ctl, random port, temp dir) and removes it on exit.
# Sets OUTAGEWATCH_TEST_POSTGRES_URL to its `postgres` database. Extra postgres settings can be
# passed as arguments (`-c name=value`). With KEEP_PG_DIR set, the cluster lives in that
# directory instead (created on first use) and is stopped but kept on exit, so a benchmark
# can reuse data it took long to seed.

start_throwaway_postgres() {
    local pg_bin="${PG_BIN:-}"
    if [ -z "$pg_bin" ]; then
        pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    fi
    if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
        if command -v initdb >/dev/null 2>&1; then
            pg_bin=$(dirname "$(command -v initdb)")
        else
            echo "PostgreSQL server binaries (initdb, pg_ctl) not found; install PostgreSQL or set PG_BIN" >&2
            return 1
        fi
    fi

    if [ -n "${KEEP_PG_DIR:-}" ]; then
        mkdir -p "$KEEP_PG_DIR"
        THROWAWAY_PG_DIR=$(cd "$KEEP_PG_DIR" && pwd)
    else
        THROWAWAY_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/outagewatch-pg.XXXXXX")
    fi
    THROWAWAY_PG_BIN="$pg_bin"
    THROWAWAY_PG_AS=()
    if [ "$(id -u)" = 0 ]; then
        # initdb and postgres refuse to run as root.
        chown postgres "$THROWAWAY_PG_DIR"
        THROWAWAY_PG_AS=(runuser -u postgres --)
    fi
    trap stop_throwaway_postgres EXIT

    if [ ! -f "$THROWAWAY_PG_DIR/data/PG_VERSION" ]; then
        "${THROWAWAY_PG_AS[@]}" "$pg_bin/initdb" -D "$THROWAWAY_PG_DIR/data" -U postgres -A trust -E UTF8 --no-sync \
            >"$THROWAWAY_PG_DIR/initdb.log" 2>&1 || { cat "$THROWAWAY_PG_DIR/initdb.log" >&2; return 1; }
    fi

    local port attempt
    for attempt in 1 2 3 4 5 6 7 8; do
        port=$((20000 + RANDOM % 30000))
        if "${THROWAWAY_PG_AS[@]}" "$pg_bin/pg_ctl" -D "$THROWAWAY_PG_DIR/data" -l "$THROWAWAY_PG_DIR/postgres.log" -w -t 30 \
            -o "-p $port -k $THROWAWAY_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 $*" start >/dev/null; then
            export OUTAGEWATCH_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
            THROWAWAY_PG_PORT=$port
            echo "throwaway PostgreSQL on 127.0.0.1:$port ($THROWAWAY_PG_DIR)"
            return 0
        fi
    done
    echo "could not start PostgreSQL" >&2
    cat "$THROWAWAY_PG_DIR/postgres.log" >&2
    return 1
}

# Starts a streaming read replica of the throwaway cluster (pg_basebackup -R, hot standby) on
# another port and sets OUTAGEWATCH_TEST_REPLICA_URL to its `postgres` database; stopped and
# removed with the cluster.
start_throwaway_replica() {
    local replica="$THROWAWAY_PG_DIR/replica" port attempt
    "${THROWAWAY_PG_AS[@]}" "$THROWAWAY_PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$THROWAWAY_PG_PORT" -U postgres \
        -D "$replica" -R --no-sync >"$THROWAWAY_PG_DIR/basebackup.log" 2>&1 \
        || { cat "$THROWAWAY_PG_DIR/basebackup.log" >&2; return 1; }
    for attempt in 1 2 3 4 5 6 7 8; do
        port=$((20000 + RANDOM % 30000))
        if "${THROWAWAY_PG_AS[@]}" "$THROWAWAY_PG_BIN/pg_ctl" -D "$replica" -l "$THROWAWAY_PG_DIR/replica.log" -w -t 30 \
            -o "-p $port -k $THROWAWAY_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c hot_standby=on" \
            start >/dev/null; then
            export OUTAGEWATCH_TEST_REPLICA_URL="postgres://postgres@127.0.0.1:$port/postgres"
            echo "throwaway streaming replica on 127.0.0.1:$port"
            return 0
        fi
    done
    echo "could not start the replica" >&2
    cat "$THROWAWAY_PG_DIR/replica.log" >&2
    return 1
}

stop_throwaway_postgres() {
    if [ -n "${THROWAWAY_PG_DIR:-}" ] && [ -f "$THROWAWAY_PG_DIR/replica/PG_VERSION" ]; then
        "${THROWAWAY_PG_AS[@]}" "$THROWAWAY_PG_BIN/pg_ctl" -D "$THROWAWAY_PG_DIR/replica" -m immediate stop >/dev/null 2>&1 || true
    fi
    if [ -n "${THROWAWAY_PG_DIR:-}" ]; then
        if [ -n "${KEEP_PG_DIR:-}" ]; then
            # A clean stop, so the kept data needs no recovery next time.
            "${THROWAWAY_PG_AS[@]}" "$THROWAWAY_PG_BIN/pg_ctl" -D "$THROWAWAY_PG_DIR/data" -m fast stop >/dev/null 2>&1 || true
        else
            "${THROWAWAY_PG_AS[@]}" "$THROWAWAY_PG_BIN/pg_ctl" -D "$THROWAWAY_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
            rm -rf "$THROWAWAY_PG_DIR"
        fi
        THROWAWAY_PG_DIR=""
    fi
}
