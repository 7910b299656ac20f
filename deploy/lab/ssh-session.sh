#!/bin/sh
# ForceCommand of the lab's sshd: the only things a lab SSH session can do.
# Called as `ssh-session.sh RUN_DIR`; SSH_ORIGINAL_COMMAND is one of
#   emit BYTES          send BYTES random bytes (a download)
#   sink                read and discard stdin (an upload)
#   interactive SECS    print a status line every ~0.5 s for SECS seconds (a dashboard)
#   console             a tiny line-oriented shell: answers each command line typed (pty)
#   scp -t PATH         legacy-protocol scp upload: always into RUN_DIR/scp-in/
#   scp -f PATH         legacy-protocol scp download: only a file of RUN_DIR/www/ (by basename)
# Anything else is refused.
set -eu
RUN_DIR=${1:?run dir}
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
    console)
        end=$(( $(date +%s) + 120 ))
        printf 'corp-files:~$ '
        while [ "$(date +%s)" -lt "$end" ] && read -r line; do
            case "$line" in
                exit|logout) break ;;
                ls*) ls "$RUN_DIR/www" ;;
                uptime) cat /proc/uptime ;;
                df*) df -h "$RUN_DIR" 2>/dev/null | tail -1 ;;
                ps*|top*) head -c 1200 /proc/meminfo ;;
                cat*|less*|tail*) head -c 3000 "$RUN_DIR/www/index.html" ;;
                "") ;;
                *) echo "$line: done" ;;
            esac
            printf 'corp-files:~$ '
        done ;;
    scp)
        shift
        mode=""; path=""
        for a in "$@"; do
            case "$a" in -t) mode=t ;; -f) mode=f ;; -*) ;; *) path=$a ;; esac
        done
        case "$mode" in
            t) mkdir -p "$RUN_DIR/scp-in"; exec scp -t "$RUN_DIR/scp-in/" ;;
            f) exec scp -f "$RUN_DIR/www/$(basename "${path:-index.html}")" ;;
            *) exit 2 ;;
        esac ;;
    *)
        echo "refused" >&2; exit 2 ;;
esac
