#!/usr/bin/env bash
# Installs the Debian packages cutter-backup needs to build, test and demo:
# PostgreSQL (server + client), GnuPG, and what sequoia's OpenSSL backend
# needs to build; systemd for systemd-analyze (unit checks) and bsdutils for
# script(1) (the TTY test); openssl (the TLS test's CA), prometheus (promtool
# checks the metrics and alert rules), python3-venv (the Python client's
# tests; scripts/python-venv.sh makes the venv), util-linux (unshare, for the
# journald field test); for the system test (tests/system/run.sh) and
# scripts/package.sh: systemd-container (systemd-nspawn), debootstrap,
# dpkg-dev (dpkg-shlibdeps; binutils' strip and readelf), lintian.
# Idempotent: does nothing when everything is present.
set -euo pipefail

packages=(postgresql postgresql-client gnupg libssl-dev pkg-config procps ca-certificates systemd bsdutils openssl prometheus python3-venv util-linux
  systemd-container debootstrap dpkg-dev binutils lintian)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }
