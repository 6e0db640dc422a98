#!/bin/sh
# edge-runtime board installer: POSIX sh, run as root on the board. Needs python3 (with venv),
# GNU tar, coreutils (sha256sum), and systemd.
#
#   sh install.sh [--replace-config | --config FILE] BUNDLE.tar.gz
#       check every archive member (no absolute paths, no '..', no links or devices), extract to a
#       temp folder, verify SHA256SUMS, build releases/<version>-<UTC time>/ (offline venv, models),
#       run `edge-runtime check` on it, switch `current` atomically, restart, health-check
#       http://127.0.0.1:<port>/healthz; on failure roll back to the previous release.
#   sh install.sh [--replace-config | --config FILE]     the same, from an extracted bundle (this folder)
#   sh install.sh rollback [--mark-failed]
#       current <- previous release, restart, health-check (run it again to undo, unless
#       --mark-failed said the release left behind is bad)
#   sh install.sh health      exit 0 if the running daemon is healthy
#   sh install.sh status      the releases, which is current and which previous
#
# The config (/etc/edge-runtime/edge-runtime.toml) is kept if there is one, unless --replace-config
# (the bundle's) or --config FILE (a per-board one); a replaced config comes back on rollback.
#
# Exit codes: 0 done and healthy; 2 refused (bad bundle, wrong board, failed check: nothing was
# changed); 3 the new release was unhealthy and the previous one runs again; 4 unhealthy and no
# healthy release to fall back to; 1 (health) unhealthy.
#
# Every path and tool can be overridden from the environment (tests run this in a fake root):
#   PREFIX ETC_DIR UNIT_DIR TMPFILES_DIR SYSTEMCTL TMPFILES USERADD GROUPADD SERVICE SERVICE_USER
#   SERVICE_GROUP STATE_DIR PYTHON KEEP_RELEASES HEALTH_URL HEALTH_TIMEOUT HEALTH_PASSES
#   HEALTH_INTERVAL DEV_DIR REPLACE_CONFIG

set -u
umask 022

PREFIX=${PREFIX:-/opt/edge-runtime}
ETC_DIR=${ETC_DIR:-/etc/edge-runtime}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
TMPFILES_DIR=${TMPFILES_DIR:-/etc/tmpfiles.d}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
TMPFILES=${TMPFILES:-systemd-tmpfiles}
USERADD=${USERADD:-useradd}
GROUPADD=${GROUPADD:-groupadd}
SERVICE=${SERVICE:-edge-runtime.service}
SERVICE_USER=${SERVICE_USER:-edge-runtime}
SERVICE_GROUP=${SERVICE_GROUP:-$SERVICE_USER}
STATE_DIR=${STATE_DIR:-/var/lib/edge-runtime}
PYTHON=${PYTHON:-python3}
KEEP_RELEASES=${KEEP_RELEASES:-3}
HEALTH_URL=${HEALTH_URL:-}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-120}
HEALTH_PASSES=${HEALTH_PASSES:-3}
HEALTH_INTERVAL=${HEALTH_INTERVAL:-2}
DEV_DIR=${DEV_DIR:-/dev}
REPLACE=${REPLACE_CONFIG:-0}
MARK_FAILED=0

TOP=edge-runtime-bundle
CONFIG="$ETC_DIR/edge-runtime.toml"
WORK=
REL=
BUILT=0

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 2
}
cleanup() {
    [ -n "$WORK" ] && rm -rf "$WORK"
    # a release that never completed is removed (nothing points at it)
    [ -n "$REL" ] && [ "$BUILT" = 0 ] && rm -rf "$REL"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

for v in PREFIX ETC_DIR UNIT_DIR TMPFILES_DIR STATE_DIR DEV_DIR; do
    p=
    eval "p=\$$v"
    case $p in
        /*) ;;
        *) die "$v=$p: must be an absolute path" ;;
    esac
    case $p in
        *[!A-Za-z0-9/._+-]*) die "$v=$p: only letters, digits and / . _ + - are allowed" ;;
    esac
done
case $KEEP_RELEASES in '' | *[!0-9]*) die "KEEP_RELEASES=$KEEP_RELEASES: give a number" ;; esac
case $HEALTH_PASSES$HEALTH_TIMEOUT$HEALTH_INTERVAL in *[!0-9]*) die "HEALTH_*: give whole numbers" ;; esac

MODE=install
NEWCONF=
BUNDLE=
while [ $# -gt 0 ]; do
    case $1 in
        install | rollback | health | status) MODE=$1 ;;
        --replace-config) REPLACE=1 ;;
        --mark-failed) MARK_FAILED=1 ;;
        --config)
            [ $# -ge 2 ] || die "--config needs a FILE"
            NEWCONF=$2
            shift
            ;;
        --config=*) NEWCONF=${1#--config=} ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*) die "unknown option $1 (see sh install.sh --help)" ;;
        *)
            [ -z "$BUNDLE" ] || die "one bundle at a time ($BUNDLE, $1)"
            BUNDLE=$1
            ;;
    esac
    shift
done

# --- helpers ---------------------------------------------------------------------------
py() { "$PYTHON" "$@"; }

json_get() { # FILE KEY -> value (exit 1, printing nothing, when the key is missing)
    py -c 'import json, sys
try:
    v = json.load(open(sys.argv[1]))[sys.argv[2]]
except (OSError, ValueError, KeyError, TypeError):
    sys.exit(1)
print(v)' "$1" "$2" 2>/dev/null
}

swap_link() { # TARGET LINK: point LINK at TARGET atomically (rename over the old link)
    py -c 'import os, sys
target, link = sys.argv[1:]
tmp = link + ".new"
try:
    os.unlink(tmp)
except FileNotFoundError:
    pass
os.symlink(target, tmp)
os.replace(tmp, link)' "$1" "$2"
}

link_of() { # LINK -> its target ("releases/<id>") or nothing
    [ -L "$1" ] && readlink "$1"
    return 0
}

render() { # SRC DST: a unit or tmpfiles file with this install's paths, written atomically
    sed -e "s|/opt/edge-runtime|$PREFIX|g" -e "s|/etc/edge-runtime|$ETC_DIR|g" "$1" >"$2.new.$$" &&
        chmod 0644 "$2.new.$$" && mv -f "$2.new.$$" "$2"
}

# --- bundle checks ---------------------------------------------------------------------------
check_listing() { # ARCHIVE: refuse unsafe members before extracting anything
    names=$(tar -tzf "$1" 2>/dev/null) || die "$1: not a readable .tar.gz bundle"
    bad=$(printf '%s\n' "$names" | while IFS= read -r name; do
        case $name in
            /*)
                echo "$name (absolute path)"
                break
                ;;
            "$TOP" | "$TOP"/*) ;;
            *)
                echo "$name (outside $TOP/)"
                break
                ;;
        esac
        case "/$name/" in */../*)
            echo "$name (path traversal)"
            break
            ;;
        esac
    done)
    [ -z "$bad" ] || die "refusing $1: unsafe path in bundle: $bad"
    # the first letter of tar -tv is the member type: '-' file, 'd' folder; links, devices, fifos are refused
    bad=$(tar -tvzf "$1" 2>/dev/null | grep -v '^[-d]' | head -n 1)
    [ -z "$bad" ] || die "refusing $1: unsafe member in bundle (link or special file): $bad"
}

verify_tree() { # DIR: only files and folders, every file in SHA256SUMS, every checksum right
    d=$1
    [ -f "$d/bundle.json" ] && [ -f "$d/SHA256SUMS" ] || die "$d: not a bundle (no bundle.json or SHA256SUMS)"
    odd=$(find "$d" ! -type f ! -type d | head -n 1)
    [ -z "$odd" ] && odd=$(find "$d" -type f -links +1 | head -n 1)
    [ -z "$odd" ] || die "refusing the bundle: ${odd#"$d"/} is a link or special file"
    lists=$(mktemp -d "${TMPDIR:-/tmp}/edge-runtime-sums.XXXXXX") || die "mktemp failed"
    (cd "$d" && find . -type f ! -path ./SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort) >"$lists/files"
    sed 's/^[0-9a-f]\{64\}  //' "$d/SHA256SUMS" | LC_ALL=C sort >"$lists/listed"
    extra=$(LC_ALL=C comm -23 "$lists/files" "$lists/listed" | head -n 1)
    missing=$(LC_ALL=C comm -13 "$lists/files" "$lists/listed" | head -n 1)
    rm -rf "$lists"
    [ -z "$extra" ] || die "refusing the bundle: $extra is not listed in SHA256SUMS"
    [ -z "$missing" ] || die "refusing the bundle: $missing is listed in SHA256SUMS but missing"
    failed=$(cd "$d" && LC_ALL=C sha256sum -c SHA256SUMS 2>/dev/null | grep -v ': OK$' | head -n 1)
    [ -z "$failed" ] || die "refusing the bundle: checksum mismatch: ${failed%: FAILED*}"
}

# --- health ---------------------------------------------------------------------------------
health_url() {
    if [ -n "$HEALTH_URL" ]; then
        echo "$HEALTH_URL"
        return
    fi
    [ -f "$CONFIG" ] && [ -x "$PREFIX/current/venv/bin/python" ] || return 0
    "$PREFIX/current/venv/bin/python" - "$CONFIG" <<'EOF' 2>/dev/null
import sys
from edge_runtime.config import load
h = load(sys.argv[1]).sinks.http
if h is not None and h.port:
    host = h.host
    if host in ("", "0.0.0.0", "localhost", "127.0.0.1"):
        host = "127.0.0.1"
    elif host in ("::", "::1"):
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    print(f"http://{host}:{h.port}/healthz")
EOF
}

probe() { # URL: one GET, no proxy; 200 = healthy, else print why
    "$PREFIX/current/venv/bin/python" - "$1" <<'EOF'
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=3) as r:
        sys.exit(0 if r.status == 200 else 1)
except urllib.error.HTTPError as e:
    print(f"HTTP {e.code} {e.read(200).decode('utf-8', 'replace').strip()}")
except Exception as e:
    print(getattr(e, "reason", None) or e)
sys.exit(1)
EOF
}

HEALTH_WHY=
health_check() { # healthy = active and HEALTH_PASSES answers 200 in a row, within HEALTH_TIMEOUT
    url=$(health_url)
    deadline=$(($(date +%s) + HEALTH_TIMEOUT))
    passes=0
    down=0
    HEALTH_WHY="no answer within ${HEALTH_TIMEOUT}s"
    while :; do
        state=$($SYSTEMCTL is-active "$SERVICE" 2>/dev/null)
        case $state in
            active)
                down=0
                if [ -z "$url" ]; then
                    passes=$((passes + 1)) # no [sinks.http]: the unit's state is all we can see
                elif why=$(probe "$url" 2>&1); then
                    passes=$((passes + 1))
                else
                    passes=0
                    HEALTH_WHY="$url: $why"
                fi
                ;;
            inactive | failed)
                passes=0
                down=$((down + 1))
                HEALTH_WHY="$SERVICE is $state (journalctl -u $SERVICE)"
                [ "$down" -ge 3 ] && return 1 # stopped for good: no need to wait for the timeout
                ;;
            *)
                passes=0
                HEALTH_WHY="$SERVICE is ${state:-unknown} (journalctl -u $SERVICE)"
                ;;
        esac
        [ "$passes" -ge "$HEALTH_PASSES" ] && return 0
        [ "$(date +%s)" -ge "$deadline" ] && return 1
        sleep "$HEALTH_INTERVAL"
    done
}

# --- releases -----------------------------------------------------------------------------
releases_newest_first() {
    [ -d "$PREFIX/releases" ] || return 0
    for r in "$PREFIX"/releases/*; do
        [ -d "$r" ] && basename "$r"
    done | sed 's/^\(.*-\)\([0-9]\{8\}T[0-9]\{6\}Z.*\)$/\2 \1\2/' | LC_ALL=C sort -r | sed 's/^[^ ]* //'
}

prune() { # keep current, previous, and up to KEEP_RELEASES completed releases in all besides current
    cur=$(link_of "$PREFIX/current")
    prev=$(link_of "$PREFIX/previous")
    kept=0
    [ -n "$prev" ] && kept=1
    for id in $(releases_newest_first); do
        case "releases/$id" in "$cur" | "$prev") continue ;; esac
        if [ ! -f "$PREFIX/releases/$id/.complete" ] || [ "$kept" -ge "$KEEP_RELEASES" ]; then
            rm -rf "${PREFIX:?}/releases/$id"
        else
            kept=$((kept + 1))
        fi
    done
}

install_unit_from() { # RELEASE_DIR: its unit and tmpfiles into place, daemon-reload
    mkdir -p "$UNIT_DIR" "$TMPFILES_DIR"
    render "$1/systemd/edge-runtime.service" "$UNIT_DIR/$SERVICE" || die "cannot write $UNIT_DIR/$SERVICE"
    if [ -f "$1/systemd/edge-runtime.conf" ]; then
        render "$1/systemd/edge-runtime.conf" "$TMPFILES_DIR/edge-runtime.conf" || die "cannot write $TMPFILES_DIR"
        if [ "$SERVICE_GROUP" != edge-runtime ]; then
            sed -i "s/ edge-runtime -\$/ $SERVICE_GROUP -/" "$TMPFILES_DIR/edge-runtime.conf"
        fi
        $TMPFILES --create "$TMPFILES_DIR/edge-runtime.conf" || say "warning: $TMPFILES --create failed"
    fi
    write_dropin
    $SYSTEMCTL daemon-reload || say "warning: $SYSTEMCTL daemon-reload failed"
}

write_dropin() { # what exists on this board: groups for render nodes / Coral PCIe, accelerator nodes by path
    dir="$UNIT_DIR/$SERVICE.d"
    f="$dir/10-board.conf"
    groups=
    for g in render apex; do
        getent group "$g" >/dev/null 2>&1 && groups="$groups $g"
    done
    nodes=
    for n in "$DEV_DIR"/nvmap "$DEV_DIR"/nvhost-* "$DEV_DIR"/nvgpu/igpu0/* "$DEV_DIR"/nvsciipc \
        "$DEV_DIR"/host1x-fence "$DEV_DIR"/nvidia*; do
        [ -c "$n" ] && nodes="$nodes $n"
    done
    mkdir -p "$dir"
    {
        echo "# Written by edge-runtime's install.sh for this board; rewritten on every install."
        echo "[Service]"
        if [ "$SERVICE_USER" != edge-runtime ] || [ "$SERVICE_GROUP" != edge-runtime ]; then
            echo "User=$SERVICE_USER"
            echo "Group=$SERVICE_GROUP"
        fi
        [ -n "$groups" ] && echo "SupplementaryGroups=${groups# }"
        for n in $nodes; do echo "DeviceAllow=$n rw"; done
    } >"$f.new.$$" && mv -f "$f.new.$$" "$f"
}

ensure_user() {
    for g in video audio plugdev; do # SupplementaryGroups= of the unit: a missing group stops the unit
        getent group "$g" >/dev/null 2>&1 || $GROUPADD --system "$g" || die "cannot create group $g"
    done
    getent group "$SERVICE_GROUP" >/dev/null 2>&1 || $GROUPADD --system "$SERVICE_GROUP" ||
        die "cannot create group $SERVICE_GROUP"
    if ! getent passwd "$SERVICE_USER" >/dev/null 2>&1; then
        $USERADD --system --gid "$SERVICE_GROUP" --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-runtime daemon" "$SERVICE_USER" ||
            die "cannot create user $SERVICE_USER"
        say "created system user $SERVICE_USER"
    fi
}

install_config() { # SRC: into $CONFIG (root:group 0640), atomically
    install -d -m 0750 -o root -g "$SERVICE_GROUP" "$ETC_DIR" || die "cannot create $ETC_DIR"
    cp "$1" "$CONFIG.new.$$" && chown "root:$SERVICE_GROUP" "$CONFIG.new.$$" && chmod 0640 "$CONFIG.new.$$" &&
        mv -f "$CONFIG.new.$$" "$CONFIG" || die "cannot write $CONFIG"
}

switch_to() { # FROM_ID TO_ID: current <- TO (restoring the config FROM replaced), restart; 0 if healthy
    from=$1
    to=$2
    if [ -f "$PREFIX/releases/$from/config-before.toml" ]; then
        install_config "$PREFIX/releases/$from/config-before.toml"
        say "restored the config $from replaced"
    fi
    install_unit_from "$PREFIX/releases/$to"
    swap_link "releases/$to" "$PREFIX/current"
    if [ -f "$PREFIX/releases/$from/.failed" ]; then
        rm -f "$PREFIX/previous"
    else
        swap_link "releases/$from" "$PREFIX/previous"
    fi
    $SYSTEMCTL restart "$SERVICE" || say "warning: $SYSTEMCTL restart $SERVICE failed"
    health_check
}

# --- modes ---------------------------------------------------------------------------------
require_root() {
    [ "$(id -u)" -eq 0 ] || die "run as root (sudo sh $0 ...)"
}

lock() {
    mkdir -p "$PREFIX/releases" || die "cannot create $PREFIX/releases"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$PREFIX/.install.lock"
        flock -n 9 || die "another install.sh is running (lock: $PREFIX/.install.lock)"
    fi
}

mode_status() {
    echo "current:  $(link_of "$PREFIX/current")"
    echo "previous: $(link_of "$PREFIX/previous")"
    for id in $(releases_newest_first); do
        flags=
        [ -f "$PREFIX/releases/$id/.complete" ] || flags=" (incomplete)"
        [ -f "$PREFIX/releases/$id/.failed" ] && flags=" (failed its health check)"
        echo "release:  $id$flags"
    done
}

mode_health() {
    if health_check; then
        echo "healthy: $(link_of "$PREFIX/current")"
        exit 0
    fi
    say "unhealthy: $HEALTH_WHY"
    exit 1
}

mode_rollback() {
    require_root
    lock
    cur=$(link_of "$PREFIX/current")
    prev=$(link_of "$PREFIX/previous")
    [ -n "$prev" ] && [ -f "$PREFIX/$prev/.complete" ] || die "no previous release to roll back to ($PREFIX/previous)"
    say "rolling back: ${cur#releases/} -> ${prev#releases/}"
    # --mark-failed: the release being left is bad; it stops being the `previous` one can return to
    [ "$MARK_FAILED" = 1 ] && [ -n "$cur" ] && touch "$PREFIX/$cur/.failed"
    if switch_to "${cur#releases/}" "${prev#releases/}"; then
        echo "rolled back to ${prev#releases/}; healthy"
        exit 0
    fi
    say "error: ${prev#releases/} is unhealthy too: $HEALTH_WHY"
    exit 4
}

mode_install() {
    require_root
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install python3 and python3-venv"
    command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found (coreutils)"
    if [ -n "$NEWCONF" ]; then
        [ -f "$NEWCONF" ] || die "--config $NEWCONF: no such file"
        NEWCONF=$(cd "$(dirname "$NEWCONF")" && pwd)/$(basename "$NEWCONF")
        REPLACE=1
    fi
    if [ -n "$BUNDLE" ]; then
        [ -f "$BUNDLE" ] || die "$BUNDLE: no such file"
        check_listing "$BUNDLE"
        WORK=$(mktemp -d "${TMPDIR:-/tmp}/edge-runtime-install.XXXXXX") || die "mktemp failed"
        tar -xzf "$BUNDLE" -C "$WORK" --no-same-owner --no-same-permissions 2>/dev/null ||
            die "$BUNDLE: cannot extract"
        B="$WORK/$TOP"
    else
        B=$(cd "$(dirname "$0")" && pwd)
        [ -f "$B/bundle.json" ] || die "give a bundle: sh install.sh BUNDLE.tar.gz"
    fi
    verify_tree "$B"

    schema=$(json_get "$B/bundle.json" schema)
    [ "$schema" = edge-runtime/bundle ] || die "bundle.json: not an edge-runtime bundle"
    want_arch=$(json_get "$B/bundle.json" arch) || die "bundle.json: no arch"
    want_py=$(json_get "$B/bundle.json" python) || die "bundle.json: no python"
    target=$(json_get "$B/bundle.json" target) || die "bundle.json: no target"
    version=$(json_get "$B/bundle.json" edge_runtime) || die "bundle.json: no edge_runtime version"
    wheel=$(json_get "$B/bundle.json" project_wheel) || die "bundle.json: no project_wheel"
    [ -f "$B/wheelhouse/$wheel" ] && [ -f "$B/wheelhouse/requirements.txt" ] || die "the bundle has no wheelhouse"
    have=$(py -c 'import sys, sysconfig; print(sysconfig.get_platform().split("-", 1)[-1], "%d.%d" % sys.version_info[:2])') ||
        die "$PYTHON does not run"
    have_arch=${have% *}
    have_py=${have#* }
    [ "$have_arch" = "$want_arch" ] ||
        die "this bundle is for $target ($want_arch); this board's $PYTHON is $have_arch: build one with the right --target"
    [ "$have_py" = "$want_py" ] ||
        die "this bundle is for CPython $want_py; this board's $PYTHON is $have_py: rebuild with --python $have_py (or set PYTHON=python$want_py)"
    py -c 'import venv, ensurepip' 2>/dev/null || die "$PYTHON has no venv/ensurepip: apt-get install python3-venv"
    base=$(py -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))')
    case $base in
        /home/* | /root/*) say "warning: $base is under /home or /root, which the service cannot see (ProtectHome=yes)" ;;
    esac

    lock
    id="$version-$(date -u +%Y%m%dT%H%M%SZ)"
    [ -e "$PREFIX/releases/$id" ] && id="$id.$$"
    REL="$PREFIX/releases/$id"
    say "installing edge-runtime $version for $target as $REL"
    mkdir -p "$REL" || die "cannot create $REL"
    # The venv is made in place: venvs are not relocatable. Until .complete exists the release is
    # incomplete; cleanup removes it if anything below fails.
    "$PYTHON" -m venv "$REL/venv" || die "$PYTHON -m venv failed"
    PIP_CONFIG_FILE=/dev/null "$REL/venv/bin/python" -m pip --isolated --disable-pip-version-check install \
        --quiet --no-index --find-links "$B/wheelhouse" -r "$B/wheelhouse/requirements.txt" ||
        die "offline pip install from the bundle's wheelhouse failed"
    PIP_CONFIG_FILE=/dev/null "$REL/venv/bin/python" -m pip --isolated --disable-pip-version-check install \
        --quiet --no-index --no-deps "$B/wheelhouse/$wheel" || die "installing $wheel failed"
    [ -d "$B/models" ] && { cp -R "$B/models" "$REL/models" || die "cannot copy the models"; }
    mkdir -p "$REL/systemd" && cp "$B"/systemd/* "$REL/systemd/" &&
        cp "$B/config/edge-runtime.toml" "$REL/edge-runtime.toml.dist" &&
        cp "$B/bundle.json" "$B/SHA256SUMS" "$B/install.sh" "$REL/" || die "cannot copy the bundle's files"
    [ -f "$B/README.md" ] && cp "$B/README.md" "$REL/"

    if [ -n "$NEWCONF" ]; then
        src=$NEWCONF
    elif [ "$REPLACE" = 1 ] || [ ! -f "$CONFIG" ]; then
        src="$REL/edge-runtime.toml.dist"
    else
        src=$CONFIG
        say "keeping $CONFIG (the bundle's is $REL/edge-runtime.toml.dist; --replace-config to use it)"
    fi
    # The new code and models against the config they will run with, before anything is switched.
    out=$(cd "$REL" && "$REL/venv/bin/edge-runtime" check --config "$src" 2>&1) ||
        die "the new release fails 'edge-runtime check --config $src': $(printf '%s\n' "$out" | tail -n 1); nothing changed"
    touch "$REL/.complete"
    BUILT=1

    # --- from here on the board changes ---
    ensure_user
    old=$(link_of "$PREFIX/current")
    [ "$old" = "releases/$id" ] && old=
    if [ "$src" != "$CONFIG" ]; then
        [ -f "$CONFIG" ] && cp -p "$CONFIG" "$REL/config-before.toml"
        install_config "$src"
    fi
    install_unit_from "$REL"
    [ -n "$old" ] && swap_link "$old" "$PREFIX/previous"
    swap_link "releases/$id" "$PREFIX/current"
    $SYSTEMCTL enable "$SERVICE" >/dev/null 2>&1 || say "warning: $SYSTEMCTL enable $SERVICE failed"
    $SYSTEMCTL restart "$SERVICE" || say "warning: $SYSTEMCTL restart $SERVICE failed"
    if health_check; then
        prune
        echo "installed $id; healthy${old:+ (previous: ${old#releases/})}"
        exit 0
    fi
    say "error: the new release $id is unhealthy: $HEALTH_WHY"
    touch "$REL/.failed"
    if [ -z "$old" ] || [ ! -f "$PREFIX/$old/.complete" ]; then
        say "error: no previous release to roll back to; see journalctl -u $SERVICE"
        exit 4
    fi
    say "rolling back to ${old#releases/}"
    if switch_to "$id" "${old#releases/}"; then
        prune
        say "rolled back to ${old#releases/}; healthy"
        [ -d "$REL" ] && say "the failed release stays in $REL for a look (pruned by later installs)"
        exit 3
    fi
    say "error: ${old#releases/} is unhealthy too: $HEALTH_WHY"
    exit 4
}

case $MODE in
    install) mode_install ;;
    rollback) mode_rollback ;;
    health) mode_health ;;
    status) mode_status ;;
esac
