#!/usr/bin/env bash
# Install edgeloop on a network node or the core host, without containers.
#
#   sudo deploy/systemd/install.sh --roles detect,sensor,enforce --iface eth0
#   sudo deploy/systemd/install.sh --roles agent --no-start          # the core host
#   deploy/systemd/install.sh --render-units /tmp/units --venv "$PWD/.venv"   # render only
#
# What it does, each step idempotent:
#   1. a system user `edgeloop` (and, for the agent role, `edgeloop-sandbox`, which runs the
#      blueprint sandbox service, with bubblewrap and libseccomp2 from Debian);
#   2. a venv at --venv (default /opt/edgeloop/venv) with edgeloop from --source (default:
#      this checkout), plus the extras the roles need: capture (sensor), agent and train
#      (agent; torch is the CPU build). Without the agent role only the edge packages are
#      installed (scripts/stage-edge.sh): no agent, traffic lab, experiments or test code;
#   3. /etc/edgeloop/*.env from deploy/systemd/env/, copied once and never overwritten
#      (agent.env holds the LLM key, kafka.env the Kafka login: 0640 root:edgeloop), detect-N.env per detector
#      instance N with its metrics port 9400+N and sensor-IFACE.env per sensor with 9380+i
#      for the i-th --iface (both rewritten on every run); enforcer 9390, agent 9391;
#   4. the units, with the venv's path, into /etc/systemd/system; then daemon-reload,
#      enable edgeloop.target and the instances, and start them unless --no-start.
#
# Roles: detect (workers, --workers N, default one per core), sensor (one per --iface, at
# most 10), enforce, agent. --render-units DIR only writes the units as step 4 would, for
# review or `systemd-analyze verify`; it needs neither root nor a venv.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROLES=detect,sensor,enforce
WORKERS=$(nproc)
IFACES=""
SOURCE=$REPO
VENV=/opt/edgeloop/venv
ETC=/etc/edgeloop
UNIT_DIR=/etc/systemd/system
RENDER_ONLY=""
START=1
PYTHON=${PYTHON:-python3}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while (($#)); do
    case "$1" in
        --roles) ROLES=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --iface) IFACES=${IFACES:+$IFACES,}$2; shift 2 ;;
        --source) SOURCE=$2; shift 2 ;;
        --venv) VENV=$2; shift 2 ;;
        --etc) ETC=$2; shift 2 ;;
        --unit-dir) UNIT_DIR=$2; shift 2 ;;
        --render-units) RENDER_ONLY=$2; shift 2 ;;
        --no-start) START=0; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; usage 2 ;;
    esac
done

has_role() { [[ ",$ROLES," == *",$1,"* ]]; }
for r in ${ROLES//,/ }; do
    case "$r" in detect|sensor|enforce|agent) ;; *) echo "install.sh: unknown role $r" >&2; exit 2 ;; esac
done
if ! [[ "$WORKERS" =~ ^[0-9]+$ ]] || ((WORKERS < 1 || WORKERS > 64)); then
    echo "install.sh: --workers must be 1..64, got $WORKERS" >&2; exit 2
fi
if has_role sensor && [[ -z "$IFACES" && -z "$RENDER_ONLY" ]]; then
    echo "install.sh: the sensor role needs --iface IFACE (repeatable)" >&2; exit 2
fi
# Sensor i serves /metrics on 9380+i: ten fit below the enforcer's 9390.
read -r -a IFACE_LIST <<< "${IFACES//,/ }"
if ((${#IFACE_LIST[@]} > 10)); then
    echo "install.sh: at most 10 --iface (metrics ports 9380-9389), got ${#IFACE_LIST[@]}" >&2; exit 2
fi

# The units name /opt/edgeloop/venv; installing elsewhere rewrites that one path.
render_units() {
    local out=$1 f
    install -d "$out"
    for f in "$HERE"/*.service "$HERE"/*.target; do
        sed "s#/opt/edgeloop/venv#${VENV}#g" "$f" > "$out/$(basename "$f")"
        chmod 644 "$out/$(basename "$f")"
    done
}

if [[ -n "$RENDER_ONLY" ]]; then
    render_units "$RENDER_ONLY"
    echo "units rendered into $RENDER_ONLY (venv $VENV)"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || { echo "install.sh: run as root (or use --render-units)" >&2; exit 1; }

echo "== user"
getent group edgeloop >/dev/null || groupadd --system edgeloop
id -u edgeloop >/dev/null 2>&1 || useradd --system --gid edgeloop --home-dir /var/lib/edgeloop \
    --no-create-home --shell /usr/sbin/nologin edgeloop
if has_role agent; then  # the blueprint sandbox runs apart from the agent, as its own user
    getent group edgeloop-sandbox >/dev/null || groupadd --system edgeloop-sandbox
    id -u edgeloop-sandbox >/dev/null 2>&1 || useradd --system --gid edgeloop-sandbox --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin edgeloop-sandbox
    bash "$REPO/scripts/setup-sandbox.sh"   # bubblewrap, libseccomp2
fi

echo "== venv $VENV"
extras=()
has_role sensor && extras+=(capture)
has_role agent && extras+=(agent train)
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
if has_role agent; then
    "$VENV/bin/python" -m pip install -q --index-url "$TORCH_INDEX_URL" torch==2.13.0
fi
# An edge node gets the edge packages only: setuptools packages what the tree holds, so
# the tree pip builds from is a staged copy without the agent, the lab and the experiments.
src=$SOURCE
if ! has_role agent && [[ -d "$SOURCE" ]]; then
    src=$(mktemp -d)
    trap 'rm -rf "$src"' EXIT
    bash "$REPO/scripts/stage-edge.sh" "$src" "$SOURCE"
fi
spec=$src
if ((${#extras[@]})); then spec="${src}[$(IFS=,; echo "${extras[*]}")]"; fi
"$VENV/bin/python" -m pip install -q "$spec"
"$VENV/bin/edgeloop" --help >/dev/null
# setup.py compiles host history's kernel where a C compiler is found; without it the
# install goes on and a detector counts host history in numpy, about 10x slower.
if ! (cd / && "$VENV/bin/python" -c "import inference._history_kernel" 2>/dev/null); then
    echo "   warning: host history's compiled kernel was not built (no C compiler?):" \
         "apt-get install gcc libc6-dev python3-dev, then run this again" >&2
fi
if has_role enforce && ! command -v nft >/dev/null; then
    echo "   warning: the enforcer runs nft: apt-get install nftables" >&2
fi

echo "== configuration $ETC"
install -d -m 755 "$ETC"
for f in "$HERE"/env/*.env; do
    dest="$ETC/$(basename "$f")"
    mode=644
    case "$(basename "$f")" in agent.env | kafka.env) mode=640 ;; esac  # secrets: never world-readable
    if [[ ! -e "$dest" ]]; then
        install -m "$mode" "$f" "$dest"
        echo "   wrote $dest"
    fi
done
chown root:edgeloop "$ETC/agent.env" "$ETC/kafka.env" && chmod 640 "$ETC/agent.env" "$ETC/kafka.env"
if has_role detect; then
    for ((n = 0; n < WORKERS; n++)); do
        printf '# Written by install.sh: detector instance %d.\nEDGELOOP_METRICS_PORT=%d\n' \
            "$n" $((9400 + n)) > "$ETC/detect-$n.env"
    done
fi
if has_role sensor; then
    for i in "${!IFACE_LIST[@]}"; do
        printf '# Written by install.sh: the sensor on %s (--iface number %d).\nEDGELOOP_METRICS_PORT=%d\n' \
            "${IFACE_LIST[i]}" "$i" $((9380 + i)) > "$ETC/sensor-${IFACE_LIST[i]}.env"
    done
fi
install -d -m 755 /usr/share/doc/edgeloop
install -m 644 "$HERE/../README.md" /usr/share/doc/edgeloop/deploy-README.md

echo "== units $UNIT_DIR"
render_units "$UNIT_DIR"
systemctl daemon-reload

units=(edgeloop.target)
if has_role detect; then for ((n = 0; n < WORKERS; n++)); do units+=("edgeloop-detect@$n.service"); done; fi
if has_role sensor; then for i in "${IFACE_LIST[@]}"; do units+=("edgeloop-sensor@$i.service"); done; fi
has_role enforce && units+=(edgeloop-enforce.service)
has_role agent && units+=(edgeloop-sandbox.service edgeloop-agent.service)
systemctl enable "${units[@]}"
if ((START)); then
    systemctl restart "${units[@]}"
    echo "started: ${units[*]}"
else
    echo "enabled, not started: ${units[*]}"
fi

targets=()
if has_role detect; then for ((n = 0; n < WORKERS; n++)); do targets+=("127.0.0.1:$((9400 + n))"); done; fi
if has_role sensor; then for i in "${!IFACE_LIST[@]}"; do targets+=("127.0.0.1:$((9380 + i))"); done; fi
has_role enforce && targets+=(127.0.0.1:9390)
has_role agent && targets+=(127.0.0.1:9391)
if ((${#targets[@]})); then
    echo "health: $VENV/bin/edgeloop status$(printf ' --target %s' "${targets[@]}")"
fi
