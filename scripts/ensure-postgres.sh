#!/usr/bin/env bash
# Make sure a PostgreSQL server (initdb, pg_ctl, postgres) is installed: the test suite starts a
# throwaway server of its own (tests/postgres_server.py). Installs Debian's `postgresql` package
# when no initdb is found.
set -euo pipefail

find_initdb() {
    local p
    if p="$(command -v initdb 2>/dev/null)"; then
        echo "$p"
        return 0
    fi
    # Debian keeps the server binaries off PATH, one directory per major version; take the newest.
    for p in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$p/initdb" ]; then
            echo "$p/initdb"
            return 0
        fi
    done
    return 1
}

if find_initdb; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "ensure-postgres: PostgreSQL (initdb) is not installed and this user is neither root nor has sudo." >&2
    echo "ensure-postgres: install the Debian package 'postgresql' (apt-get install postgresql), then run the tests again." >&2
    exit 1
fi

echo "ensure-postgres: initdb not found; installing Debian package 'postgresql'" >&2
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql

if ! find_initdb; then
    echo "ensure-postgres: installed 'postgresql' but still found no initdb (PATH or /usr/lib/postgresql/*/bin)" >&2
    exit 1
fi
