#!/bin/sh
# ForceCommand of the lab's sshd: the only things a lab SSH session can do.
# SSH_ORIGINAL_COMMAND is one of
#   emit BYTES          send BYTES random bytes (a download, e.g. scp-like)
#   sink                read and discard stdin (an upload)
#   interactive SECS    print a status line every ~0.5 s for SECS seconds (a console)
# Anything else is refused.
set -eu
set -- ${SSH_ORIGINAL_COMMAND:-}
num() { case "${1:-x}" in ''|*[!0-9]*) exit 2;; esac; }
case "${1:-}" in
    emit)
        num "${2:-}"; [ "$2" -le 33554432 ] || exit 2
        head -c "$2" /dev/urandom ;;
    sink)
        cat > /dev/null ;;
    interactive)
        num "${2:-}"; [ "$2" -le 120 ] || exit 2
        end=$(( $(date +%s) + $2 ))
        while [ "$(date +%s)" -lt "$end" ]; do
            echo "$(date +%T) load: $(cut -d' ' -f1-3 /proc/loadavg)"
            sleep 0.5
        done ;;
    *)
        echo "refused" >&2; exit 2 ;;
esac
