#!/usr/bin/env bash
# Stage the edge install: pyproject.toml, README.md and only the packages a network node runs.
#
#   scripts/stage-edge.sh DEST [SRC]    # SRC: a checkout (default: this one); DEST: new or empty
#   scripts/stage-edge.sh --list        # the edge packages, one a line
#
# setuptools packages what it finds in the tree it builds from, so `pip install DEST` (or
# `pip wheel DEST`) gives an edgeloop without the LLM agent (llm_agents), the traffic lab
# (trafficlab), the evaluation and experiments, and the test scaffolding (tests/support).
# Dockerfile.edge, deploy/systemd/install.sh (roles without the agent) and
# tests/unit/test_wheel_contents.py all stage through here, so the test sees what a node gets.
set -euo pipefail

EDGE_PACKAGES=(contracts streams inference edgeloop_app)
# setup.py builds the one compiled module, host history's kernel (inference/_history_kernel.pyx).

if [[ ${1:-} == --list ]]; then
    printf '%s\n' "${EDGE_PACKAGES[@]}"
    exit 0
fi
if (($# < 1 || $# > 2)); then
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi

DEST=$1
SRC=${2:-$(cd "$(dirname "$0")/.." && pwd)}
for p in pyproject.toml setup.py README.md "${EDGE_PACKAGES[@]}"; do
    [[ -e "$SRC/$p" ]] || { echo "stage-edge.sh: $SRC/$p is missing" >&2; exit 1; }
done
# A leftover package in DEST would be packaged too: stage into a clean directory only.
if [[ -d "$DEST" ]] && [[ -n $(ls -A "$DEST") ]]; then
    echo "stage-edge.sh: $DEST is not empty" >&2
    exit 1
fi
mkdir -p "$DEST"
# A checkout's in-place build (the kernel's .so and its generated C) is rebuilt, not staged.
tar -C "$SRC" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.so' --exclude=inference/_history_kernel.c \
    -cf - pyproject.toml setup.py README.md "${EDGE_PACKAGES[@]}" \
    | tar -C "$DEST" -xf -
