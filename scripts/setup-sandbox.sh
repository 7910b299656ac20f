#!/usr/bin/env bash
# Install what the blueprint sandbox is made of, from Debian (see llm_agents/blueprints/sandbox.py):
#
#   bubblewrap   namespaces, the minimal read-only root, its own /proc, die-with-parent
#   libseccomp2  compiles the two seccomp filters (loaded by bubblewrap and by the runner)
#
# Idempotent and non-interactive; `apt-get update` runs only when a package has no candidate.
# Without root it installs nothing and says so: the agent then reports at start, in
# `edgeloop status` and in edgeloop_sandbox_available that it can only label.
#
#   scripts/setup-sandbox.sh            # install
#   scripts/setup-sandbox.sh --check    # exit 1 and list what is missing, install nothing
set -euo pipefail

APT_PACKAGES=(bubblewrap libseccomp2)
export DEBIAN_FRONTEND=noninteractive

# shellcheck source=scripts/apt-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt-lib.sh"

missing=()
for p in "${APT_PACKAGES[@]}"; do is_installed "$p" || missing+=("$p"); done

if [[ "${1:-}" == "--check" ]]; then
    if ((${#missing[@]})); then echo "sandbox: Debian packages missing: ${missing[*]}"; exit 1; fi
    echo "sandbox tools present ($(bwrap --version))"
    exit 0
fi

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup-sandbox: not root, skipping Debian packages: ${missing[*]}" >&2
        exit 0
    fi
    need_update=0
    for p in "${missing[@]}"; do has_candidate "$p" || need_update=1; done
    if ((need_update)); then
        echo "setup-sandbox: refreshing package lists"
        apt-get update -qq
    fi
    echo "setup-sandbox: installing ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    for p in "${missing[@]}"; do
        is_installed "$p" || { echo "setup-sandbox: failed to install $p" >&2; exit 1; }
    done
fi
echo "setup-sandbox: ready ($(bwrap --version))"
