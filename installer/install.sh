#!/usr/bin/env bash
# Install or upgrade the drilling telemetry appliance from this offline bundle.
#
#   sudo ./install.sh                                  the appliance at /opt, /etc, /var (root)
#   ./install.sh --prefix DIR                          the same tree under DIR, no root needed
#   ./install.sh --set web_port=8443 --set rig_id=rig-7 ...
#
# Never uses the network: every wheel is in wheels/, checked against MANIFEST.sha256 and
# installed with pip --no-index --require-hashes. Running it again upgrades in place: the
# code is replaced (a new release beside the old, switched over by one symlink), data,
# settings, users and certificates are kept, and the programs restart one at a time.
# ./install.sh --help lists every option; docs/DEPLOYMENT.md is the full guide.
set -euo pipefail
umask 022

BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX=""
RUN_USER=""
RUN_USER_SET=0
SETS=()
ADMIN_USER="admin"
ADMIN_PASSWORD_FILE=""
PYTHON=""
START=1
TLS_HOSTS=()
KEEP_RELEASES=3

usage() {
    cat <<EOF
usage: install.sh [options]

Install (or upgrade in place) the drilling telemetry appliance from this bundle, offline.

  --prefix DIR                 install the same tree under DIR instead of /; no root needed,
                               supervisord is started in the background (no systemd)
  --user NAME                  system user (and group) the programs run as (root mode: rigtel;
                               with --prefix as root: optional, for testing the root layout)
  --set NAME=VALUE             a setting for appliance.ini, repeatable (ports, rig_id, ...;
                               'rigtel config' lists them). On an upgrade only these change.
  --admin-user NAME            first dashboard administrator (default: admin)
  --admin-password-file FILE   read its password from FILE instead of prompting
  --tls-host NAME              name (or address) for the self-signed certificate, repeatable
  --python PATH                the Python to build the virtualenv with (default: python3.X
                               matching the bundle, else python3)
  --no-start                   install and configure, but do not start or restart anything
  -h, --help                   this text
EOF
}

die() { echo "install: $*" >&2; exit 1; }
step() { echo "install: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="${2:?--prefix needs a folder}"; shift 2 ;;
        --prefix=*) PREFIX="${1#*=}"; shift ;;
        --user) RUN_USER="${2:?--user needs a name}"; RUN_USER_SET=1; shift 2 ;;
        --set) SETS+=("${2:?--set needs NAME=VALUE}"); shift 2 ;;
        --set=*) SETS+=("${1#*=}"); shift ;;
        --admin-user) ADMIN_USER="${2:?--admin-user needs a name}"; shift 2 ;;
        --admin-password-file) ADMIN_PASSWORD_FILE="${2:?--admin-password-file needs a file}"; shift 2 ;;
        --tls-host) TLS_HOSTS+=("${2:?--tls-host needs a name}"); shift 2 ;;
        --python) PYTHON="${2:?--python needs a path}"; shift 2 ;;
        --no-start) START=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done

# --- what and where ------------------------------------------------------------------------
version_field() { sed -n "s/^$1=//p" "$BUNDLE/VERSION"; }
[ -f "$BUNDLE/VERSION" ] && [ -f "$BUNDLE/MANIFEST.sha256" ] ||
    die "this does not look like an extracted bundle ($BUNDLE has no VERSION/MANIFEST.sha256)"
VERSION="$(version_field version)"
TARGET_PY="$(version_field python)"
TARGET_GLIBC="$(version_field glibc)"

if [ -z "$PREFIX" ]; then
    [ "$(id -u)" = 0 ] || die "installing at / needs root: run it with sudo, or use --prefix DIR"
    ROOT="/"
    [ "$RUN_USER_SET" = 1 ] || RUN_USER="rigtel"
else
    mkdir -p "$PREFIX"
    ROOT="$(cd "$PREFIX" && pwd)"
    if [ -n "$RUN_USER" ] && [ "$(id -u)" != 0 ]; then
        die "--user needs root (programs are started as that user)"
    fi
fi
R="${ROOT%/}"
OPT="$R/opt/rigtel"; ETC="$R/etc/rigtel"; LIB="$R/var/lib/rigtel"; LOG="$R/var/log/rigtel"; RUN="$R/run/rigtel"
CONF="$ETC/supervisord.conf"
SOCK="$RUN/supervisor.sock"
GROUP="$RUN_USER"

# --- 1. the bundle is complete and unaltered -------------------------------------------------
step "checking the bundle ($VERSION, $(version_field target)) against MANIFEST.sha256"
(cd "$BUNDLE" && sha256sum --check --quiet --strict MANIFEST.sha256) ||
    die "the bundle is damaged or altered (files above): copy the tarball again and re-extract it"

# --- 2. a Python that the wheels fit ------------------------------------------------------------
if [ -z "$PYTHON" ]; then
    # the system's Python first: one under a personal folder (pyenv in ~root) is not
    # reachable by the programs' user
    for p in "/usr/bin/python$TARGET_PY" "/usr/local/bin/python$TARGET_PY" \
             "$(command -v "python$TARGET_PY" || true)" "$(command -v python3 || true)"; do
        if [ -n "$p" ] && [ -x "$p" ]; then PYTHON="$p"; break; fi
    done
fi
[ -n "$PYTHON" ] && [ -x "$PYTHON" ] ||
    die "no Python $TARGET_PY found: install python$TARGET_PY from the distribution's media, or give --python PATH"
"$PYTHON" - "$TARGET_PY" "$TARGET_GLIBC" <<'EOF' || exit 1
import platform, sys
want, glibc = sys.argv[1], sys.argv[2]
have = f"{sys.version_info[0]}.{sys.version_info[1]}"
if have != want:
    sys.exit(f"install: this bundle is built for Python {want}, but {sys.executable} is {have}: "
             f"give --python /path/to/python{want}, or build a bundle for {have} (make bundle BUNDLE_PYTHON={have})")
lib, ver = platform.libc_ver()
if lib == "glibc" and tuple(map(int, ver.split(".")[:2])) < tuple(map(int, glibc.split("."))):
    sys.exit(f"install: this bundle needs glibc {glibc} or newer; this system has {ver}: "
             f"build one with make bundle BUNDLE_GLIBC={ver}")
EOF

# --- early check of the settings, before anything is built: from the project's wheel itself
# (pure Python; the settings code needs only the standard library). A refusal (2) stops here;
# anything else is left to the full check in step 5.
SET_ARGS=()
for s in "${SETS[@]+"${SETS[@]}"}"; do SET_ARGS+=(--set "$s"); done
PROJECT_WHEEL="$(ls "$BUNDLE"/wheels/rigtel-*.whl | head -n 1)"
EARLY=0
PYTHONPATH="$PROJECT_WHEEL" "$PYTHON" -m appliance.ops.setup settings --dry-run --root "$ROOT" \
    --opt-current "$OPT/current" --template "$BUNDLE/etc/appliance.ini" "${SET_ARGS[@]+"${SET_ARGS[@]}"}" \
    >/dev/null 2>"${TMPDIR:-/tmp}/rigtel-install-check.$$" || EARLY=$?
if [ "$EARLY" = 2 ]; then
    cat "${TMPDIR:-/tmp}/rigtel-install-check.$$" >&2; rm -f "${TMPDIR:-/tmp}/rigtel-install-check.$$"
    die "stopped before changing anything"
fi
rm -f "${TMPDIR:-/tmp}/rigtel-install-check.$$"

# --- 3. user, group and folders -------------------------------------------------------------
if [ -n "$RUN_USER" ]; then
    if ! getent group "$GROUP" >/dev/null; then
        step "creating system group $GROUP"
        groupadd --system "$GROUP"
    fi
    if ! getent passwd "$RUN_USER" >/dev/null; then
        step "creating system user $RUN_USER"
        useradd --system --gid "$GROUP" --home-dir "$LIB" --no-create-home \
                --shell /usr/sbin/nologin --comment "drilling telemetry appliance" "$RUN_USER"
    fi
    # a WITS0 feed on a serial port (data_source = wits0, wits0_mode = serial) needs the tty
    if getent group dialout >/dev/null && ! id -nG "$RUN_USER" | grep -qw dialout; then
        usermod -a -G dialout "$RUN_USER"
    fi
fi
mkdir -p "$OPT/releases" "$ETC" "$LIB" "$LOG" "$RUN"
if [ -n "$RUN_USER" ]; then
    # code root-owned and read-only to the programs; state theirs; logs written by supervisord
    chown root:root "$OPT"; chmod 0755 "$OPT"
    chown root:"$GROUP" "$ETC" "$LOG" "$RUN"; chmod 0750 "$ETC" "$LOG" "$RUN"
    chown "$RUN_USER":"$GROUP" "$LIB"; chmod 0750 "$LIB"
else
    chmod 0750 "$ETC" "$LIB" "$LOG" "$RUN"
fi

if [ -n "$RUN_USER" ] && ! runuser -u "$RUN_USER" -- "$PYTHON" -c "" 2>/dev/null; then
    die "$PYTHON cannot be run by the user $RUN_USER (is it under a private folder such as /root?): give --python with a system Python, e.g. /usr/bin/python$TARGET_PY"
fi

# --- 4. the new release: a virtualenv with every wheel, offline --------------------------------
RELEASE="$OPT/releases/$VERSION-$(date -u +%Y%m%dT%H%M%SZ)"
[ ! -e "$RELEASE" ] || RELEASE="$RELEASE-$$"
step "installing release $(basename "$RELEASE") into $OPT (offline: --no-index --require-hashes)"
mkdir -p "$RELEASE"
"$PYTHON" -m venv --without-pip "$RELEASE/venv"
PIP_WHEEL="$(ls "$BUNDLE"/wheels/pip-*.whl | head -n 1)"
# no pip configuration or environment from this machine: only the bundle's wheels count
env -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_REQUIRE_HASHES \
    PIP_CONFIG_FILE=/dev/null PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$RELEASE/venv/bin/python" "$PIP_WHEEL/pip" install --quiet --no-index --find-links "$BUNDLE/wheels" \
    --require-hashes --no-cache-dir --only-binary=:all: -r "$BUNDLE/requirements.txt" ||
    { rm -rf "$RELEASE"; die "installing the wheels failed (above); the running appliance, if any, is untouched"; }
cp -r "$BUNDLE/webroot" "$RELEASE/webroot"
cp -r "$BUNDLE/etc" "$RELEASE/etc"
cp "$BUNDLE/VERSION" "$BUNDLE/install.sh" "$BUNDLE/uninstall.sh" "$RELEASE/"
[ -f "$BUNDLE/DEPLOYMENT.md" ] && cp "$BUNDLE/DEPLOYMENT.md" "$RELEASE/"
SETUP=("$RELEASE/venv/bin/python" -m appliance.ops.setup)

# --- 5. settings (kept on an upgrade) and supervisord's configuration --------------------------
FRESH=0; [ -f "$ETC/appliance.ini" ] || FRESH=1
env -u RIGTEL_CONFIG "${SETUP[@]}" settings --root "$ROOT" --opt-current "$OPT/current" \
    --template "$BUNDLE/etc/appliance.ini" "${SET_ARGS[@]+"${SET_ARGS[@]}"}" ||
    { rm -rf "$RELEASE"; die "stopped before changing anything"; }
"${SETUP[@]}" render --root "$ROOT" --opt-current "$OPT/current" --release "$RELEASE" \
    --template "$BUNDLE/etc/supervisord.conf.in" --user "$RUN_USER" --group "$GROUP"
if [ -n "$RUN_USER" ]; then chown root:"$GROUP" "$ETC/appliance.ini" "$CONF"; fi

# --- 6. switch the code over: one symlink, so programs restart into the new release ------------
ln -sfn "releases/$(basename "$RELEASE")" "$OPT/current.new"
mv -T "$OPT/current.new" "$OPT/current"
ln -sfn "current/uninstall.sh" "$OPT/uninstall.sh"
RIGTEL=("$OPT/current/venv/bin/rigtel")
RIGTEL_ENV=(env -u RIGTEL_CONFIG -u RIGTEL_ENV_FILE)
CFG=(--config "$ETC/appliance.ini")
if [ "$ROOT" = "/" ]; then
    mkdir -p /usr/local/bin
    ln -sfn "$OPT/current/venv/bin/rigtel" /usr/local/bin/rigtel
    ln -sfn "$OPT/current/venv/bin/supervisorctl" /usr/local/bin/supervisorctl
elif [ -n "$RUN_USER" ]; then  # root layout under a prefix (tests): the same links, relocated
    mkdir -p "$R/usr/local/bin"
    ln -sfn "$OPT/current/venv/bin/rigtel" "$R/usr/local/bin/rigtel"
    ln -sfn "$OPT/current/venv/bin/supervisorctl" "$R/usr/local/bin/supervisorctl"
fi
setting() {  # the effective value of one setting ("" when this release has no such setting)
    "${RIGTEL_ENV[@]}" "$OPT/current/venv/bin/python" -c 'import sys; from appliance.config import load
print(load(config_file=sys.argv[1]).values.get(sys.argv[2], ""))' "$ETC/appliance.ini" "$1"
}

# --- 7. TLS certificate and the first administrator (kept on an upgrade) ------------------------
as_owner() {  # a secret the programs must read: theirs, private; its folder open to their group
    local f="$1" dir
    dir="$(dirname "$f")"
    if [ -n "$RUN_USER" ]; then
        chown "$RUN_USER":"$GROUP" "$f"
        [ "$dir" = "$ETC" ] || { chown root:"$GROUP" "$dir"; chmod 0750 "$dir"; }
    fi
    chmod 0600 "$f"
}
if "${RIGTEL_ENV[@]}" "${RIGTEL[@]}" tls --help >/dev/null 2>&1; then
    CERT="$(setting tls_cert_file)"
    if [ -n "$CERT" ] && [ -f "$CERT" ]; then
        step "TLS certificate kept: $CERT"
    else
        HOST_ARGS=()
        for h in "${TLS_HOSTS[@]+"${TLS_HOSTS[@]}"}"; do HOST_ARGS+=(--host "$h"); done
        [ ${#HOST_ARGS[@]} -gt 0 ] || HOST_ARGS=(--host "$(hostname -f 2>/dev/null || hostname)")
        step "making a self-signed TLS certificate (replace it with the site's: rigtel tls install)"
        "${RIGTEL_ENV[@]}" "${RIGTEL[@]}" tls self-signed "${CFG[@]}" "${HOST_ARGS[@]}"
        KEY="$(setting tls_key_file)"
        if [ -n "$KEY" ] && [ -f "$KEY" ]; then as_owner "$KEY"; fi
        if [ -f "$CERT" ] && [ -n "$RUN_USER" ]; then chown root:"$GROUP" "$CERT"; chmod 0640 "$CERT"; fi
    fi
else
    step "NOTE: this release has no 'rigtel tls' yet: the dashboard serves plain HTTP on loopback only"
fi
if "${RIGTEL_ENV[@]}" "${RIGTEL[@]}" user --help >/dev/null 2>&1; then
    USERS="$(setting users_file)"
    if [ -n "$USERS" ] && [ -s "$USERS" ]; then
        step "users kept: $USERS"
    else
        PASSFILE="$ADMIN_PASSWORD_FILE"
        if [ -z "$PASSFILE" ]; then
            [ -t 0 ] || die "no terminal to ask the administrator's password: give --admin-password-file FILE"
            PASSFILE="$(mktemp)"; trap 'rm -f "$PASSFILE"' EXIT
            while :; do
                read -r -s -p "Password for the dashboard administrator '$ADMIN_USER': " P1; echo
                read -r -s -p "Again: " P2; echo
                [ "$P1" = "$P2" ] && [ -n "$P1" ] && break
                echo "They differ or are empty; again."
            done
            printf '%s\n' "$P1" > "$PASSFILE"; unset P1 P2
        fi
        step "creating the dashboard administrator '$ADMIN_USER'"
        "${RIGTEL_ENV[@]}" "${RIGTEL[@]}" user add "$ADMIN_USER" --role admin --password-file "$PASSFILE" "${CFG[@]}"
        USERS="$(setting users_file)"
        if [ -n "$USERS" ] && [ -f "$USERS" ]; then as_owner "$USERS"; fi
    fi
else
    step "NOTE: this release has no 'rigtel user' yet: the dashboard has no logins (loopback only)"
fi

# --- 8. start, or restart one program at a time ------------------------------------------------
CTL=("$OPT/current/venv/bin/supervisorctl" -c "$CONF")
running() { [ -S "$SOCK" ] && "${CTL[@]}" pid >/dev/null 2>&1; }
systemd_up() { [ "$ROOT" = "/" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
prune_releases() {
    # keep the newest few: the running supervisord may still be on an older one
    ls -1dt "$OPT"/releases/*/ 2>/dev/null | tail -n "+$((KEEP_RELEASES + 1))" | while read -r old; do
        [ "$(readlink -f "$old")" = "$(readlink -f "$OPT/current")" ] || rm -rf "$old"
    done
}

if [ "$START" = 0 ]; then
    step "installed, not started (--no-start)"
elif running; then
    step "upgrading: supervisord is running; programs restart one at a time"
    if systemd_up; then systemctl daemon-reload; fi  # the unit may have changed: used at its next start
    "${CTL[@]}" reread
    # adds and removes programs: one whose setting turned it on or off (wits0-out) is
    # started or stopped here
    "${CTL[@]}" update
    for program in $("${SETUP[@]}" programs --conf "$CONF"); do
        "${CTL[@]}" restart "$program" | sed 's/^/install:   /'
    done
else
    if systemd_up; then
        step "starting the rigtel service (systemd)"
        systemctl daemon-reload
        systemctl enable --now rigtel.service
    else
        [ "$ROOT" = "/" ] && step "NOTE: systemd is not running here: supervisord is started in the background and will not start at boot"
        rm -f "$SOCK"
        step "starting supervisord in the background"
        # a clean environment, as systemd would give: no RIGTEL_* of this shell overrides the ini
        (cd "$LIB" && exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            LANG=C.UTF-8 setsid "$OPT/current/venv/bin/supervisord" -c "$CONF") </dev/null >/dev/null 2>&1 &
    fi
fi
prune_releases

# --- 9. smoke test, then where to go -------------------------------------------------------------
CHECK_RC=0
if [ "$START" = 1 ]; then
    step "checking the running appliance (rigtel check)"
    "${RIGTEL_ENV[@]}" "${RIGTEL[@]}" check "${CFG[@]}" --wait 90 || CHECK_RC=$?
fi
URL="$("${RIGTEL_ENV[@]}" "$OPT/current/venv/bin/python" -c '
import sys
from appliance.config import load
from appliance.ops.status import web_url
print(web_url(load(config_file=sys.argv[1])))' "$ETC/appliance.ini")"
if [ "$ROOT" = "/" ]; then STATUS_CMD="supervisorctl status"; RIGTEL_CMD="rigtel"
else STATUS_CMD="$OPT/current/venv/bin/supervisorctl status"; RIGTEL_CMD="$OPT/current/venv/bin/rigtel --config $ETC/appliance.ini"; fi
cat <<EOF

Drilling telemetry appliance $VERSION installed in $OPT ($([ "$FRESH" = 1 ] && echo "new install" || echo "upgrade")).
  dashboard:  $URL
  programs:   $STATUS_CMD
  health:     $RIGTEL_CMD status
  settings:   $ETC/appliance.ini   (then: $RIGTEL_CMD config)
  data:       $LIB      logs: $LOG/<program>.log
  uninstall:  $OPT/uninstall.sh$([ "$ROOT" = "/" ] || echo " --prefix $ROOT")   (keeps data; --purge removes it)
EOF
if [ "$CHECK_RC" != 0 ]; then
    echo "install: the appliance is installed but 'rigtel check' failed (above): see docs/DEPLOYMENT.md, Troubleshooting" >&2
    exit 3
fi
