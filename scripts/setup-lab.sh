#!/usr/bin/env bash
# Install what the traffic lab (trafficlab, deploy/lab) needs, without starting anything.
#
# Idempotent: when every package is already installed (and the PAM guard below is in
# place) it does nothing and exits 0. Non-interactive (CI as root). `apt-get update` runs
# only when a package has no candidate in the current lists. Services are never started
# on the host: a policy-rc.d that refuses every start is put in place for the install (an
# existing one is kept), every daemon package this run installs is disabled afterwards
# (so a reboot does not start memcached, snmpd, smbd, mosquitto or vsftpd on the host),
# and `dnsmasq-base` is used rather than `dnsmasq`, which would enable a system resolver.
# The lab starts its own daemons inside its network namespaces.
#
# No NTP daemon package: chrony and ntpsec conflict with systemd-timesyncd and would
# replace the host's time sync. The lab's NTP server and clients are busybox's ntpd,
# which serves time without ever setting the clock (-w). busybox also gives udhcpc, the
# lab's DHCP client; dnsmasq is the DHCP server.
#
# /etc/pam.d/edgeloop-lab-deny is a PAM service that refuses everyone. The lab's vsftpd
# authenticates local users against it, so FTP password guessing gets real "530 Login
# incorrect" replies but can never log in to the host (the lab refuses to start vsftpd
# without it).
#
#   sudo scripts/setup-lab.sh          # install
#   scripts/setup-lab.sh --check       # exit 1 and list what is missing, install nothing
set -euo pipefail

# wrk is optional (the benign web client falls back to curl loops without it).
REQUIRED=(iproute2 ethtool nftables nmap hping3 tcpdump nginx openssh-server openssh-client openssl
          dnsmasq-base slowhttptest hydra iperf3 curl procps
          iputils-ping masscan zmap medusa patator ncrack fping busybox t50
          vsftpd memcached snmpd snmp samba smbclient mosquitto mosquitto-clients)
OPTIONAL=(wrk)
# Daemons whose packages enable a host service; disabled right after we install them.
SERVICES=(vsftpd memcached snmpd smbd nmbd samba-ad-dc mosquitto)
PAM_DENY=/etc/pam.d/edgeloop-lab-deny
PAM_TEXT='# edgeloop traffic lab: refuse every login (the lab vsftpd; see scripts/setup-lab.sh)
auth     requisite pam_deny.so
account  requisite pam_deny.so
password requisite pam_deny.so
session  requisite pam_deny.so'

export DEBIAN_FRONTEND=noninteractive

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

has_candidate() {
    local c
    c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [[ -n "$c" && "$c" != "(none)" ]]
}

pam_ok() { [[ -f "$PAM_DENY" ]] && grep -q "^auth *requisite pam_deny.so" "$PAM_DENY"; }

missing=()
for p in "${REQUIRED[@]}"; do is_installed "$p" || missing+=("$p"); done
optional_missing=()
for p in "${OPTIONAL[@]}"; do is_installed "$p" || optional_missing+=("$p"); done

if [[ "${1:-}" == "--check" ]]; then
    pam_ok || missing+=("$PAM_DENY")
    if ((${#missing[@]})); then echo "lab packages missing: ${missing[*]}"; exit 1; fi
    echo "lab packages present${optional_missing:+ (optional missing: ${optional_missing[*]})}"
    exit 0
fi

if ((${#missing[@]} == 0 && ${#optional_missing[@]} == 0)) && pam_ok; then
    echo "setup-lab: all lab packages already installed"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-lab: must run as root to install: ${missing[*]} ${optional_missing[*]}" >&2
    exit 1
fi

if ! pam_ok; then
    printf '%s\n' "$PAM_TEXT" > "$PAM_DENY"
    chmod 644 "$PAM_DENY"
    echo "setup-lab: wrote $PAM_DENY"
fi

if ((${#missing[@]} == 0 && ${#optional_missing[@]} == 0)); then
    echo "setup-lab: done"
    exit 0
fi

need_update=0
for p in "${missing[@]}"; do has_candidate "$p" || need_update=1; done
if ((need_update)); then
    echo "setup-lab: refreshing package lists"
    apt-get update -qq -o DPkg::Lock::Timeout=300
fi

install=("${missing[@]}")
for p in "${optional_missing[@]}"; do
    if has_candidate "$p"; then install+=("$p"); else echo "setup-lab: optional $p unavailable, skipping"; fi
done

# Which service units exist before the install: only units this run adds get disabled.
had_unit=()
for u in "${SERVICES[@]}"; do
    if [[ -e "/lib/systemd/system/$u.service" || -e "/etc/init.d/$u" ]]; then had_unit+=("$u"); fi
done

# Refuse every service start during the install; remove our guard afterwards.
POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"
    chmod 755 "$POLICY"
    own_policy=1
fi
cleanup() { if ((own_policy)); then rm -f "$POLICY"; fi; }
trap cleanup EXIT

apt_install() {
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}
echo "setup-lab: installing ${install[*]}"
if ! apt_install "${install[@]}"; then
    # Stale lists point at package versions the mirror no longer has: refresh once, retry.
    echo "setup-lab: install failed; refreshing package lists and retrying"
    apt-get update -qq -o DPkg::Lock::Timeout=300
    apt_install "${install[@]}"
fi

for u in "${SERVICES[@]}"; do
    [[ " ${had_unit[*]} " == *" $u "* ]] && continue
    if [[ -e "/lib/systemd/system/$u.service" ]] && command -v systemctl >/dev/null; then
        systemctl disable "$u.service" >/dev/null 2>&1 || true
    fi
    if [[ -e "/etc/init.d/$u" ]] && command -v update-rc.d >/dev/null; then
        update-rc.d "$u" disable >/dev/null 2>&1 || true
    fi
done

still=()
for p in "${REQUIRED[@]}"; do is_installed "$p" || still+=("$p"); done
if ((${#still[@]})); then
    echo "setup-lab: failed to install: ${still[*]}" >&2
    exit 1
fi
echo "setup-lab: done"
