#!/usr/bin/env bash
# Install the tools that validate and exercise deploy/, without starting anything.
#
#   Debian: prometheus      the server (the integration test starts one on loopback) and promtool
#           docker-compose  v1 (Debian's), for `docker-compose config`: validates the compose file
#                           offline; no Docker engine runs here, so nothing is built or started
#           systemd         systemd-analyze, for `systemd-analyze verify` of the units
#           ShellCheck      (package shellcheck) for the install scripts
#           stunnel4        TLS in front of the embedded broker, for the Kafka-over-TLS test
#   PyPI, into their own venv (.venv/deploy-tools, never the project's .venv, whose pins
#   they would move: check-jsonschema pulls a click that faust-streaming refuses):
#           kubernetes-validate  Kubernetes schemas shipped in the wheel (no cluster, no network)
#           check-jsonschema     the compose-spec schema shipped in the wheel
#           dockerfile           BuildKit's own Dockerfile parser
#
# Idempotent: when everything is present it does nothing and exits 0. Non-interactive.
# `apt-get update` runs only when a package has no candidate in the current lists.
# Services are never started: the prometheus package ships a unit it would start, so a
# policy-rc.d that refuses every start is in place for the install (an existing one is kept).
# Without root the apt part is skipped with a message (tests that need those tools skip).
#
#   scripts/setup-deploy-tools.sh            # install
#   scripts/setup-deploy-tools.sh --check    # exit 1 and list what is missing, install nothing
set -euo pipefail

cd "$(dirname "$0")/.."
APT_PACKAGES=(prometheus docker-compose systemd shellcheck stunnel4)
PIP_PACKAGES=("kubernetes-validate>=1.30" "check-jsonschema>=0.28" "dockerfile>=3.3")
PIP_MODULES=(kubernetes_validate check_jsonschema dockerfile)
TOOLS_VENV=${DEPLOY_TOOLS_VENV:-.venv/deploy-tools}
PYTHON=${PYTHON:-python3}

export DEBIAN_FRONTEND=noninteractive

# shellcheck source=scripts/apt-lib.sh
source scripts/apt-lib.sh  # cwd is the repo root (cd above)
venv_ok() {
    [[ -x "$TOOLS_VENV/bin/python" ]] || return 1
    local m
    for m in "${PIP_MODULES[@]}"; do
        "$TOOLS_VENV/bin/python" -c "import $m" 2>/dev/null || return 1
    done
}

missing=()
for p in "${APT_PACKAGES[@]}"; do is_installed "$p" || missing+=("$p"); done

if [[ "${1:-}" == "--check" ]]; then
    rc=0
    if ((${#missing[@]})); then echo "deploy tools: Debian packages missing: ${missing[*]}"; rc=1; fi
    if ! venv_ok; then echo "deploy tools: $TOOLS_VENV lacks ${PIP_PACKAGES[*]}"; rc=1; fi
    ((rc)) || echo "deploy tools present"
    exit $rc
fi

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup-deploy-tools: not root, skipping Debian packages: ${missing[*]}" >&2
    else
        need_update=0
        for p in "${missing[@]}"; do has_candidate "$p" || need_update=1; done
        if ((need_update)); then
            echo "setup-deploy-tools: refreshing package lists"
            apt-get update -qq
        fi
        POLICY=/usr/sbin/policy-rc.d
        own_policy=0
        if [[ ! -e "$POLICY" ]]; then
            printf '#!/bin/sh\nexit 101\n' > "$POLICY"
            chmod 755 "$POLICY"
            own_policy=1
        fi
        cleanup() { if ((own_policy)); then rm -f "$POLICY"; fi; }
        trap cleanup EXIT
        echo "setup-deploy-tools: installing ${missing[*]}"
        apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
        still=()
        for p in "${missing[@]}"; do is_installed "$p" || still+=("$p"); done
        if ((${#still[@]})); then
            echo "setup-deploy-tools: failed to install: ${still[*]}" >&2
            exit 1
        fi
    fi
fi

if ! venv_ok; then
    echo "setup-deploy-tools: installing ${PIP_PACKAGES[*]} into $TOOLS_VENV"
    [[ -x "$TOOLS_VENV/bin/python" ]] || "$PYTHON" -m venv "$TOOLS_VENV"
    "$TOOLS_VENV/bin/python" -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
    venv_ok || { echo "setup-deploy-tools: $TOOLS_VENV is still incomplete" >&2; exit 1; }
fi
echo "setup-deploy-tools: ready (promtool: $(command -v promtool || echo missing), validators: $TOOLS_VENV/bin)"
