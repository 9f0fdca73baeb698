# Sourced by scripts/test: makes sure the machine has what the suite needs besides cargo:
# PostgreSQL's server binaries (the throwaway clusters), the `postgres` user when running as
# root (initdb and postgres refuse root), Chromium and chromedriver (tests/browser.rs), HAProxy
# (tests/scale_out.rs puts it in front of three replicas) and schemathesis's `st` (the fault
# suite). As root on Debian or Ubuntu it installs what is missing; anywhere else it prints the
# one command that does and fails. When everything is there it only looks (about a second:
# `st --version` starts Python).

SCHEMATHESIS=schemathesis==4.32.5

# Whether the PostgreSQL server binaries are where scripts/lib/throwaway-postgres.sh looks.
have_postgres_server() {
    { [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ]; } \
        || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
        || command -v initdb >/dev/null 2>&1
}

# The first of the paths (or the file named by the variable $1) that exists, as
# tests/browser/driver.rs finds Chromium and chromedriver.
have_program() {
    local variable=$1
    shift
    if [ -n "${!variable:-}" ]; then
        [ -e "${!variable}" ]
        return
    fi
    local candidate
    for candidate in "$@"; do
        [ -e "$candidate" ] && return 0
    done
    return 1
}

have_chromium() { have_program CHROME /usr/bin/chromium /usr/bin/chromium-browser; }
have_chromedriver() { have_program CHROMEDRIVER /usr/bin/chromedriver /usr/lib/chromium/chromedriver; }
# Where tests/scale_out.rs looks: $HAPROXY, Debian's /usr/sbin/haproxy, /usr/local/sbin, the PATH.
have_haproxy() {
    have_program HAPROXY /usr/sbin/haproxy /usr/local/sbin/haproxy \
        || { [ -z "${HAPROXY:-}" ] && command -v haproxy >/dev/null 2>&1; }
}
have_schemathesis() { [[ "$(st --version 2>/dev/null)" == *"${SCHEMATHESIS#*==}"* ]]; }
have_pip() { python3 -m pip --version >/dev/null 2>&1; }
# Only a root run needs it: the clusters then run as `postgres`.
needs_postgres_user() { [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; }

# The os-release ID and ID_LIKE words, lowercase, on one line.
os_family() {
    [ -r /etc/os-release ] || return 0
    (. /etc/os-release && echo "${ID:-} ${ID_LIKE:-}") | tr '[:upper:]' '[:lower:]'
}

is_debian_like() {
    case " $(os_family) " in
        *" debian "* | *" ubuntu "*) return 0 ;;
    esac
    return 1
}

# The system packages missing on this machine, named for package manager $1 (apt, dnf, pacman).
missing_packages() {
    local manager=$1 packages=()
    if ! have_postgres_server; then
        case $manager in
            apt) packages+=(postgresql) ;;
            dnf) packages+=(postgresql-server) ;;
            pacman) packages+=(postgresql) ;;
        esac
    fi
    # Ubuntu has no `chromium` deb: its chromium-browser and chromium-chromedriver install the snap.
    local ubuntu=false
    case " $(os_family) " in *" ubuntu "*) ubuntu=true ;; esac
    if ! have_chromium; then
        if [ "$manager" = apt ] && $ubuntu; then
            packages+=(chromium-browser)
        else
            packages+=(chromium)
        fi
    fi
    if ! have_chromedriver; then
        case $manager in
            apt) if $ubuntu; then packages+=(chromium-chromedriver); else packages+=(chromium-driver); fi ;;
            dnf) packages+=(chromedriver) ;;
            # Arch's chromium package holds chromedriver.
            pacman) [[ " ${packages[*]} " == *" chromium "* ]] || packages+=(chromium) ;;
        esac
    fi
    # The same name in all three.
    have_haproxy || packages+=(haproxy)
    if ! have_schemathesis && ! have_pip; then
        case $manager in
            apt | dnf) packages+=(python3-pip) ;;
            pacman) packages+=(python-pip) ;;
        esac
    fi
    echo "${packages[*]}"
}

# What is missing, in words, for the message.
missing_summary() {
    local missing=()
    have_postgres_server || missing+=("PostgreSQL server binaries (initdb, pg_ctl)")
    needs_postgres_user && missing+=("a postgres user")
    have_chromium || missing+=("Chromium")
    have_chromedriver || missing+=("chromedriver")
    have_haproxy || missing+=("HAProxy")
    have_schemathesis || missing+=("$SCHEMATHESIS (st)")
    local summary="" item
    for item in "${missing[@]}"; do
        summary="${summary:+$summary, }$item"
    done
    echo "$summary"
}

all_present() {
    have_postgres_server && ! needs_postgres_user && have_chromium && have_chromedriver \
        && have_haproxy && have_schemathesis
}

# The one command that installs what is missing here; empty when no package manager is known.
install_command() {
    local sudo="" manager="" install=""
    [ "$(id -u)" = 0 ] || sudo="sudo "
    case " $(os_family) " in
        *" debian "* | *" ubuntu "*) manager=apt install="${sudo}apt-get update && ${sudo}apt-get install -y" ;;
        *" fedora "* | *" rhel "* | *" centos "*) manager=dnf install="${sudo}dnf install -y" ;;
        *" arch "*) manager=pacman install="${sudo}pacman -S --needed --noconfirm" ;;
    esac
    [ -n "$manager" ] || return 0
    local steps=() packages
    packages=$(missing_packages "$manager")
    [ -z "$packages" ] || steps+=("$install $packages")
    needs_postgres_user && steps+=("useradd --system --home /var/lib/postgresql --shell /bin/bash postgres")
    have_schemathesis || steps+=("python3 -m pip install $SCHEMATHESIS")
    local command="" step
    for step in "${steps[@]}"; do
        command="${command:+$command && }$step"
    done
    echo "$command"
}

# Debian's haproxy package starts its own service on install (where services may start), with a
# configuration that listens on no port. The tests run HAProxy themselves with their own
# configuration on free ports, so the service that was installed for them is stopped and kept
# from starting at boot.
stop_packaged_haproxy() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now haproxy >/dev/null 2>&1 || true
    elif command -v invoke-rc.d >/dev/null 2>&1; then
        invoke-rc.d haproxy stop >/dev/null 2>&1 || true
        update-rc.d haproxy disable >/dev/null 2>&1 || true
    fi
}

# Installs what is missing (root on Debian/Ubuntu), or says how and fails.
ensure_test_prerequisites() {
    all_present && return 0
    if [ "$(id -u)" = 0 ] && is_debian_like && command -v apt-get >/dev/null 2>&1; then
        local packages
        packages=$(missing_packages apt)
        if [ -n "$packages" ]; then
            echo "scripts/test: installing $packages"
            apt-get update -qq
            # shellcheck disable=SC2086 # one word per package
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
            [[ " $packages " != *" haproxy "* ]] || stop_packaged_haproxy
        fi
        if needs_postgres_user; then
            echo "scripts/test: adding the postgres user (the clusters run as it)"
            useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
        fi
        if ! have_schemathesis; then
            echo "scripts/test: installing $SCHEMATHESIS"
            # Debian's own Python refuses pip installs (PEP 668) unless told otherwise; a pip
            # too old to know the setting ignores it.
            PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check "$SCHEMATHESIS"
            hash -r
        fi
        all_present && return 0
        echo "scripts/test: still missing after installing: $(missing_summary)" >&2
        return 1
    fi
    local command
    command=$(install_command)
    if [ -n "$command" ]; then
        echo "scripts/test: missing $(missing_summary). Install with:" >&2
        echo "$command" >&2
    else
        # No package manager known here to name the packages for.
        echo "scripts/test: missing $(missing_summary); install them with this system's package manager" \
            "(schemathesis: python3 -m pip install $SCHEMATHESIS)." >&2
    fi
    return 1
}
