#!/usr/bin/env bash
# Creates (or reuses) the Python venv for clients/python and prints its path
# as the last line of stdout; everything else goes to stderr. Usage:
#
#   venv=$(scripts/python-venv.sh | tail -n1)
#   "$venv/bin/python" -m pytest clients/python/tests
#
# The venv lives outside the clone, under
#   ${XDG_CACHE_HOME:-$HOME/.cache}/cutter-backup/venv-<hash>
# where <hash> is the sha256 of clients/python/requirements-dev.txt (the
# exact pins: grpcio, grpcio-tools, grpcio-health-checking,
# grpcio-reflection, protobuf, pytest, setuptools and what they pull in) and
# of the interpreter's version. Same pins, same Python: the venv is reused;
# otherwise a new one is built. It is made with Debian's /usr/bin/python3
# (package python3-venv, installed here when missing and running as root).
# The package itself (./clients/python) is reinstalled on every run, from a
# clean copy and without pip's cache: it is ours and changes often.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

say() { printf 'python-venv: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
trap 'say "FAILED (line $LINENO): $BASH_COMMAND"' ERR

python=/usr/bin/python3
requirements="$repo/clients/python/requirements-dev.txt"
[ -x "$python" ] || die "$python is missing: apt-get install python3 python3-venv"
[ -f "$requirements" ] || die "$requirements is missing"

# venv needs ensurepip, which Debian ships in python3-venv.
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    die "Debian's python3-venv is missing; run as root or: sudo apt-get install python3-venv"
  fi
  say "installing python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends python3-venv >&2
fi

py_version=$("$python" -c 'import sys; print(sys.implementation.name, ".".join(map(str, sys.version_info[:3])))')
hash=$( { cat "$requirements"; printf 'python: %s\n' "$py_version"; } | sha256sum | cut -d" " -f1)
cache="${XDG_CACHE_HOME:-${HOME:?neither XDG_CACHE_HOME nor HOME is set}/.cache}/cutter-backup"
venv="$cache/venv-$hash"
mkdir -p "$cache"

# One builder at a time per cache (two test runs may start together).
exec 9>"$cache/.lock"
flock 9

if [ -f "$venv/.complete" ] && "$venv/bin/python" -c 'import grpc' 2>/dev/null; then
  say "reusing $venv"
else
  [ -e "$venv" ] && { say "removing the incomplete $venv"; rm -rf "$venv"; }
  say "creating $venv ($py_version)"
  "$python" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input -r "$requirements" >&2 \
    || { rm -rf "$venv"; die "pip could not install the pins of $requirements"; }
  printf '%s\n' "$hash" >"$venv/.complete"
fi

# Our package: from a clean copy, so no build/ or *.egg-info of an earlier
# build (which may hold deleted modules) ends up in the install.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
tar -C "$repo/clients/python" --exclude=build --exclude='*.egg-info' \
  --exclude=__pycache__ --exclude=.pytest_cache -cf - . | tar -C "$src" -xf -
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --no-cache-dir --no-build-isolation --no-deps --force-reinstall "$src" >&2 \
  || die "pip could not install clients/python"
# --no-deps above: the dependencies must already be among the pins.
"$venv/bin/python" -m pip check --disable-pip-version-check >&2 \
  || die "clients/python needs a package that $requirements does not pin; add it there"
"$venv/bin/python" -c 'import cutter_backup' \
  || die "cutter_backup does not import in $venv"

echo "$venv"
