# Shared by the setup scripts (sourced, not run): is a Debian package installed, can apt install it.
# shellcheck shell=bash

is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

has_candidate() {
    local c
    c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [[ -n "$c" && "$c" != "(none)" ]]
}
