#!/usr/bin/env bash
# Remove the drilling telemetry appliance: stop it, remove the code, the service and the
# command links. Data (/var/lib/rigtel), settings, users and certificates (/etc/rigtel) and
# logs (/var/log/rigtel) are kept unless --purge.
#
#   sudo /opt/rigtel/uninstall.sh [--purge]
#   DIR/opt/rigtel/uninstall.sh --prefix DIR [--purge]
set -euo pipefail

PREFIX=""
PURGE=0
RUN_USER=""
usage() {
    cat <<EOF
usage: uninstall.sh [--prefix DIR] [--purge] [--user NAME]

Stop the appliance and remove its code, service unit and command links.
  --prefix DIR   the appliance installed with install.sh --prefix DIR
  --purge        also remove the database, backups, settings, users, certificates and logs
                 (and, at /, the system user): there is no way back
  --user NAME    the system user to remove with --purge (default at /: rigtel)
EOF
}
die() { echo "uninstall: $*" >&2; exit 1; }
step() { echo "uninstall: $*"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="${2:?--prefix needs a folder}"; shift 2 ;;
        --prefix=*) PREFIX="${1#*=}"; shift ;;
        --purge) PURGE=1; shift ;;
        --user) RUN_USER="${2:?--user needs a name}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done
if [ -z "$PREFIX" ]; then
    [ "$(id -u)" = 0 ] || die "the appliance at / is removed by root: run it with sudo, or give --prefix DIR"
    ROOT="/"; [ -n "$RUN_USER" ] || RUN_USER="rigtel"
else
    [ -d "$PREFIX" ] || die "no folder $PREFIX"
    ROOT="$(cd "$PREFIX" && pwd)"
fi
R="${ROOT%/}"
OPT="$R/opt/rigtel"; ETC="$R/etc/rigtel"; LIB="$R/var/lib/rigtel"; LOG="$R/var/log/rigtel"; RUN="$R/run/rigtel"
CONF="$ETC/supervisord.conf"
[ -d "$OPT" ] || [ -d "$ETC" ] || die "no appliance installed under $ROOT"

# stop: systemd's service, else the supervisord that the socket leads to
UNIT="$R/etc/systemd/system/rigtel.service"
if [ "$ROOT" = "/" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null &&
        systemctl list-unit-files rigtel.service >/dev/null 2>&1; then
    step "stopping and disabling the rigtel service"
    systemctl disable --now rigtel.service || true
fi
if [ -S "$RUN/supervisor.sock" ] && [ -x "$OPT/current/venv/bin/supervisorctl" ]; then
    PID="$("$OPT/current/venv/bin/supervisorctl" -c "$CONF" pid 2>/dev/null || true)"
    if [ -n "$PID" ] && [ "$PID" -gt 1 ] 2>/dev/null; then
        step "stopping supervisord (pid $PID) and every program"
        "$OPT/current/venv/bin/supervisorctl" -c "$CONF" shutdown >/dev/null || true
        for _ in $(seq 1 240); do kill -0 "$PID" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$PID" 2>/dev/null && die "supervisord (pid $PID) did not stop within 120 s; nothing removed"
    fi
fi

step "removing the code ($OPT), the service unit and the command links"
for link in "$R/usr/local/bin/rigtel" "$R/usr/local/bin/supervisorctl"; do
    if [ -L "$link" ] && [[ "$(readlink "$link")" == "$OPT/"* ]]; then rm -f "$link"; fi
done
if [ -f "$R/etc/supervisord.conf" ] && grep -q "written by the rigtel installer" "$R/etc/supervisord.conf"; then
    rm -f "$R/etc/supervisord.conf"
fi
rm -f "$UNIT"
[ "$ROOT" = "/" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ] && systemctl daemon-reload || true
rm -rf "$OPT" "$RUN"

if [ "$PURGE" = 1 ]; then
    step "--purge: removing data, backups, settings, users, certificates and logs"
    rm -rf "$ETC" "$LIB" "$LOG"
    if [ -n "$RUN_USER" ] && getent passwd "$RUN_USER" >/dev/null; then
        step "removing the system user $RUN_USER"
        userdel "$RUN_USER" || true
        getent group "$RUN_USER" >/dev/null && groupdel "$RUN_USER" 2>/dev/null || true
    fi
    step "done: nothing of the appliance is left under $ROOT"
else
    step "done; kept: $LIB (data, backups), $ETC (settings, users, certificates), $LOG (logs)."
    step "Installing a bundle again picks them up; --purge removes them."
fi
