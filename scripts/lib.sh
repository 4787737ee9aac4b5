# Shared helpers for the setup scripts. Source it: . "$(dirname "$0")/lib.sh"
# Everything here is idempotent and quiet when there is nothing to do.

GH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GH_CACHE=${GLASSHOUSE_CACHE:-/var/cache/glasshouse}
export DEBIAN_FRONTEND=noninteractive

gh_log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

# ensure_apt PKG...: install the Debian/Ubuntu packages that are not installed yet.
_GH_APT_UPDATED=${_GH_APT_UPDATED:-}
ensure_apt() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    gh_log "missing packages (run as root to install): ${missing[*]}"; return 1
  fi
  gh_log "apt-get install ${missing[*]}"
  if [ -z "$_GH_APT_UPDATED" ]; then apt-get update -qq >/dev/null; _GH_APT_UPDATED=1; fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_apt_optional PKG...: like ensure_apt, one package at a time, never fatal
# (a package missing from this distribution disables a feature; doctor says which).
ensure_apt_optional() {
  local p
  for p in "$@"; do ensure_apt "$p" 2>/dev/null || gh_log "optional package $p unavailable"; done
}
