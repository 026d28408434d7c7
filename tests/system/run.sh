#!/usr/bin/env bash
# The system test: cutter-backup as an operator gets it, under a real
# systemd. It packages the debug binaries already built in target/debug
# (scripts/package.sh --bins-from; a release build belongs in benchmarks),
# runs lintian, boots a Debian 12 root (debootstrap, cached outside the clone,
# copied per run so the cache stays pristine) with systemd-nspawn, and with
# nsenter into the container:
#   - installs the .deb and follows docs/operations.md as written: every
#     block marked <!-- systest: NAME --> is extracted and run in one
#     simulated root shell session (variables carry from block to block;
#     passphrases and the password are typed on stdin), and every block of
#     the doc must carry a marker, so the runbook cannot drift;
#   - the lifecycle: systemctl stop during a backup, SIGSTOP and the
#     watchdog, restart, journalctl RUN_ID=, systemd-analyze security;
#   - the package lifecycle: upgrade N -> N+1 with the daemon running, purge.
# Each step prints `PASS name` or `FAIL name: reason`; the last line is
# `N passed, M failed` and the exit status is non-zero on any failure. A
# missing tool is a failure, never a skip. Run as root (scripts/test.sh does).
#   KEEP=1 keeps the container's root and logs for a post-mortem.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
repo=$PWD
doc="$repo/docs/operations.md"

passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
summary() { echo "$passed passed, $failed failed"; }
# A step whose failure makes every later step meaningless.
fatal() { fail "$1" "$2"; summary; exit 1; }

# --- tools ------------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then fatal tools "run as root (debootstrap, systemd-nspawn and nsenter need it)"; fi
missing=()
for t in debootstrap systemd-nspawn nsenter dpkg-deb dpkg-shlibdeps lintian strip readelf sha256sum; do
  command -v "$t" >/dev/null || missing+=("$t")
done
[ "${#missing[@]}" -eq 0 ] || fatal tools "missing ${missing[*]} (scripts/deps.sh installs them)"
for b in cutter-backupd cutterctl; do
  [ -x "target/debug/$b" ] || fatal tools "no target/debug/$b: cargo build --workspace --bins --locked first"
done
pass tools

work=$(mktemp -d /var/tmp/cutter-systest.XXXXXX)
nspawn_pid=""
cleanup() {
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    # SIGTERM asks nspawn for an orderly shutdown of the container.
    kill -TERM "$nspawn_pid" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  if [ -n "${KEEP:-}" ]; then echo "kept: $work" >&2; else rm -rf --one-file-system "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the packages -------------------------------------------------------------
mkdir -p "$work/debs"
pkg_ok=1
for rev in 1 2; do
  if ! scripts/package.sh --bins-from target/debug --revision "$rev" --out "$work/debs" > "$work/package-$rev.log" 2>&1; then
    pkg_ok=0
  fi
done
deb1=$(ls "$work"/debs/cutter-backup_*-1_amd64.deb 2>/dev/null)
deb2=$(ls "$work"/debs/cutter-backup_*-2_amd64.deb 2>/dev/null)
if [ "$pkg_ok" = 1 ] && [ -n "$deb1" ] && [ -n "$deb2" ]; then
  pass "package ($(basename "$deb1"), $(du -h "$deb1" | cut -f1))"
else
  fatal package "scripts/package.sh failed: $(tail -n 3 "$work"/package-*.log | tr '\n' ' ')"
fi
contents=$(dpkg-deb -c "$deb1")
want_paths=(usr/bin/cutter-backupd usr/bin/cutterctl usr/lib/systemd/system/cutter-backupd.service
  usr/lib/systemd/system/cutter-backupd.socket usr/lib/sysusers.d/cutter-backup.conf
  usr/lib/tmpfiles.d/cutter-backup.conf etc/cutter/backupd.toml usr/share/man/man8/cutter-backupd.8.gz
  usr/share/man/man1/cutterctl.1.gz usr/share/bash-completion/completions/cutterctl
  usr/share/doc/cutter-backup/copyright usr/share/doc/cutter-backup/operations.md.gz)
absent=()
for p in "${want_paths[@]}"; do grep -q " \./$p\$" <<<"$contents" || absent+=("$p"); done
depends=$(dpkg-deb -f "$deb1" Depends)
conffiles=$(dpkg-deb --ctrl-tarfile "$deb1" | tar -xOf - ./conffiles)
dpkg-deb --fsys-tarfile "$deb1" | tar -xOf - ./usr/bin/cutter-backupd > "$work/cutter-backupd.packaged"
# Stripped: no symbol table, no DWARF (.debug_gdb_scripts is loaded code, not debug info).
debug_sections=$(readelf -SW "$work/cutter-backupd.packaged" | grep -cE '\.(symtab|debug_(info|line|str|abbrev|ranges))')
if [ "${#absent[@]}" -gt 0 ]; then
  fail package-contents "missing ${absent[*]}"
elif ! grep -qx /etc/cutter/backupd.toml <<<"$conffiles"; then
  fail package-contents "/etc/cutter/backupd.toml is not a conffile"
elif ! grep -q 'libssl3' <<<"$depends" || ! grep -q 'postgresql-client' <<<"$depends"; then
  fail package-contents "Depends lacks libssl3 or postgresql-client: $depends"
elif [ "$debug_sections" != 0 ]; then
  fail package-contents "usr/bin/cutter-backupd is not stripped ($debug_sections symbol/debug sections)"
else
  pass "package-contents (Depends: $depends)"
fi

# lintian: errors, warnings, and even info/pedantic tags fail; every
# override in deploy/debian/lintian-overrides says why.
if lintian --display-info --pedantic --fail-on error,warning,info,pedantic "$deb1" > "$work/lintian.log" 2>&1; then
  pass "lintian (clean at --pedantic; overrides: $(grep -c '^cutter-backup:' deploy/debian/lintian-overrides), each explained)"
else
  fail lintian "$(grep -v 'running with root privileges' "$work/lintian.log" | head -n 5 | tr '\n' ' ')"
fi

# --- the Debian 12 root ---------------------------------------------------------
# The cache key is the debootstrap command itself: change the package list
# and a new root is built next to the old one.
mirror=${CUTTER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
include=systemd,systemd-sysv,dbus,postgresql-15,gnupg,ca-certificates,libssl3
boot_args=(--variant=minbase "--include=$include" bookworm)
cache_base=${XDG_CACHE_HOME:-$HOME/.cache}/cutter-backup
key=$(printf '%s\n' "${boot_args[@]}" | sha256sum | cut -c1-16)
cached="$cache_base/debian-root-$key"
t0=$SECONDS
if [ -f "$cached/.complete" ]; then
  root_note="cached"
else
  mkdir -p "$cache_base"
  # Built beside the cache under this run's name, renamed when complete: a
  # run that dies half-way or a concurrent run never sees a partial root.
  partial="$cached.partial.$$"
  if debootstrap "${boot_args[@]}" "$partial" "$mirror" > "$work/debootstrap.log" 2>&1; then
    touch "$partial/.complete"
    if ! mv -T "$partial" "$cached" 2>/dev/null; then rm -rf --one-file-system "$partial"; fi
    root_note="built in $((SECONDS - t0)) s"
  else
    rm -rf --one-file-system "$partial"
    fatal debian-root "debootstrap failed: $(tail -n 3 "$work/debootstrap.log" | tr '\n' ' ')"
  fi
fi
cp -a --reflink=auto "$cached" "$work/root" || fatal debian-root "copying $cached failed"
pass "debian-root ($root_note, $cached, ready for this run after $((SECONDS - t0)) s)"

# --- boot -------------------------------------------------------------------------
# The operator's world before the package: an env file with unrelated
# secrets (root-only, as docker's are) and the first .deb in /root.
install -d -m 0755 "$work/root/opt/incomex/docker"
printf 'POSTGRES_PASSWORD=unrelated-secret\n' > "$work/root/opt/incomex/docker/.env"
chmod 0600 "$work/root/opt/incomex/docker/.env"
cp "$deb1" "$work/root/root/"
install -d -m 0700 "$work/root/root/upgrade" && cp "$deb2" "$work/root/root/upgrade/"

t0=$SECONDS
# --private-network: the container's PostgreSQL gets its own loopback, so
# port 5432 cannot collide with the host's.
systemd-nspawn --register=no --keep-unit --private-network -D "$work/root" -b \
  < /dev/null > "$work/console.log" 2>&1 &
nspawn_pid=$!
cpid=""
# The container's init: nspawn's child once it has become systemd (before
# that exec, and under load, the child is a short-lived helper whose pid
# nsenter would find gone).
container_init() {
  local c
  c=$(awk '{ print $1 }' "/proc/$nspawn_pid/task/$nspawn_pid/children" 2>/dev/null)
  [ -n "$c" ] && [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] && echo "$c"
}
for _ in $(seq 300); do
  cpid=$(container_init)
  [ -n "$cpid" ] && break
  sleep 0.1
done
[ -n "$cpid" ] || fatal boot "systemd-nspawn started no container: $(tail -n 5 "$work/console.log" | tr '\n' ' ')"

# A command in the container, with a clean environment.
in_c() {
  nsenter -t "$cpid" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}
state=""
for _ in $(seq 120); do
  # Until dbus is up systemctl cannot ask; then --wait waits for the end of boot.
  state=$(timeout 60 nsenter -t "$cpid" -a systemctl is-system-running --wait 2>&1)
  case "$state" in running|degraded|maintenance|stopping) break ;; esac
  sleep 0.5
done
case "$state" in
  running) pass "boot (systemd $(in_c systemctl --version | awk 'NR==1{print $2}'), $((SECONDS - t0)) s)" ;;
  *) fatal boot "system is $state: $(in_c systemctl --failed --no-legend | tr '\n' ' ')" ;;
esac

# --- the database the runbook meets ---------------------------------------------
# The report's world: 9 tables in cutter_governance of database directus, a
# role cutter_exec with a password, every grant but two.
dbpass=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
tables=(cut_run cut_plan cut_target cut_change_set cut_approval cut_lock cut_audit_log verify_result cut_change_set_affected_row)
psql_su() { in_c runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 "$@"; }
for _ in $(seq 60); do in_c runuser -u postgres -- pg_isready -q && break; sleep 0.5; done
if {
  echo "CREATE ROLE cutter_exec LOGIN PASSWORD '$dbpass';"
  echo "CREATE DATABASE directus;"
  echo "\\connect directus"
  echo "CREATE SCHEMA cutter_governance; GRANT USAGE ON SCHEMA cutter_governance TO cutter_exec;"
  n=0
  for t in "${tables[@]}"; do
    n=$((n + 1))
    echo "CREATE TABLE cutter_governance.$t (id bigserial PRIMARY KEY, label text, doc jsonb, at timestamptz DEFAULT now());"
    echo "INSERT INTO cutter_governance.$t (label, doc) SELECT '$t ' || g, jsonb_build_object('g', g) FROM generate_series(1, $((n * 120))) g;"
  done
  for t in "${tables[@]:0:7}"; do echo "GRANT SELECT ON cutter_governance.$t TO cutter_exec;"; done
  echo "GRANT SELECT ON ALL SEQUENCES IN SCHEMA cutter_governance TO cutter_exec;"
} | psql_su -d postgres > "$work/fixture.log" 2>&1; then
  pass "fixture (PostgreSQL $(psql_su -At -c 'SHOW server_version' | cut -d' ' -f1), directus, cutter_exec without 2 grants)"
else
  fatal fixture "$(tail -n 3 "$work/fixture.log" | tr '\n' ' ')"
fi

# --- the runbook, as written -------------------------------------------------------
# The code block after `<!-- systest: NAME -->` in docs/operations.md.
block() {
  awk -v m="<!-- systest: $1 -->" '
    $0 == m { want = 1; next }
    want && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' "$doc"
}
# Every fenced block must be marked; a marker must precede a fence.
doc_blocks=$(awk '/^```/ { if (!inside) { n++; if (prev !~ /^<!-- systest: [a-z0-9-]+ -->$/) bad = bad " line " NR } inside = !inside } { prev = $0 } END { print n + 0; print bad }' "$doc")
markers=$(grep -oE '^<!-- systest: [a-z0-9-]+ -->$' "$doc" | sed -E 's/<!-- systest: (.*) -->/\1/')
declare -A ran=()

# The simulated operator session: each block is sourced by one bash that
# first loads the variables earlier blocks left and at exit saves the ones
# it has now (declare -p), like lines typed into one terminal. set -e: a
# failing line stops its block, as the operator would stop reading.
mkdir -p "$work/root/root/.systest/blocks"
in_c bash -c 'compgen -v' > "$work/root/root/.systest/baseline"
: > "$work/root/root/.systest/session"
cat > "$work/root/root/.systest/run-block" <<'RUNNER'
#!/bin/bash
# Runs one runbook block (file $1) in the session: variables in, variables out.
__st=/root/.systest
. "$__st/session"
__st_save() {
  local __st_v
  for __st_v in $(compgen -v | grep -vxF -f "$__st/baseline" | grep -v '^__st'); do
    declare -p "$__st_v" 2>/dev/null
  done > "$__st/session.new" && mv "$__st/session.new" "$__st/session"
}
trap '__st_rc=$?; __st_save; exit $__st_rc' EXIT
set -e -o pipefail
cd /root
. "$1"
RUNNER
chmod 0755 "$work/root/root/.systest/run-block"

# run_block NAME [STDIN]: runs it, output in $out, status in $rc.
run_block() {
  local name=$1 input=${2:-}
  ran[$name]=1
  local text
  text=$(block "$name")
  if [ -z "$text" ]; then out="no block marked $name in docs/operations.md"; rc=127; return; fi
  printf '%s\n' "$text" > "$work/root/root/.systest/blocks/$name"
  out=$(printf '%s' "$input" | in_c /root/.systest/run-block "/root/.systest/blocks/$name" 2>&1)
  rc=$?
  printf '== %s (rc %s)\n%s\n' "$name" "$rc" "$out" >> "$work/runbook.log"
}
# run_sql NAME: a SQL block, as the schema's owner (here: postgres).
run_sql() {
  ran[$1]=1
  out=$(block "$1" | psql_su -d directus -f - 2>&1)
  rc=$?
}
session_var() { in_c bash -c ". /root/.systest/session; printf '%s' \"\${$1}\""; }
brief() { tail -n 4 <<<"$out" | tr '\n' ' '; }
svc() { in_c systemctl show -p "$1" --value cutter-backupd.service; }
# A unit's ActiveState ("inactive" for a stopped or unknown unit): checks
# compare it with the state they expect, so a container that cannot be
# asked (nsenter failing) is no pass.
unit_state() { in_c systemctl show -p ActiveState --value "$1"; }
# Absence, asked positively: `in_c test ! -e` exits 0 only when the
# container answered and the path is not there (`! in_c test -e` would
# also pass when nsenter itself failed).
absent() { in_c test ! -e "$1"; }

passphrase1=$(head -c 18 /dev/urandom | base64)
passphrase2=$(head -c 18 /dev/urandom | base64)

run_block install
if [ "$rc" = 0 ] \
  && [ "$(in_c systemctl is-enabled cutter-backupd.socket)" = enabled ] \
  && [ "$(unit_state cutter-backupd.socket)" = inactive ] && [ "$(svc ActiveState)" = inactive ] \
  && [ "$(in_c stat -c '%a %U' /var/lib/cutter/backups)" = "700 cutter-backup" ] \
  && [ "$(in_c stat -c '%a %G' /etc/cutter)" = "750 cutter-backup" ]; then
  pass "runbook 0 install: socket enabled, nothing started, user and directories made"
else
  fail "runbook 0 install" "rc $rc, socket $(in_c systemctl is-enabled cutter-backupd.socket)/$(in_c systemctl is-active cutter-backupd.socket), $(brief)"
fi

run_block keygen "$passphrase1"$'\n'
fpr=$(session_var FPR)
gpg_version=$(in_c gpg --version | awk 'NR==1{print $3}')
if [ "$rc" = 0 ] && [[ "$fpr" =~ ^[0-9A-F]{40}$ ]] && in_c gpg --list-secret-keys "$fpr" >/dev/null 2>&1; then
  pass "runbook 1 keygen (GnuPG $gpg_version; no 2.4 in Debian 12's packages)"
else
  fail "runbook 1 keygen" "rc $rc, FPR '$fpr': $(brief)"
fi

run_block publish-fingerprint
if [ "$rc" = 0 ] && in_c grep -qx "BACKUP_GPG_FPR=$fpr" /opt/incomex/docker/.env; then
  pass "runbook 2 fingerprint in the env file"
else
  fail "runbook 2 fingerprint in the env file" "rc $rc: $(brief)"
fi

run_block provision "$dbpass"$'\n'
if [ "$rc" = 0 ] && grep -q OK <<<"$out" && [ "$(in_c stat -c '%a' /etc/cutter/db-password)" = 600 ]; then
  pass "runbook 3 provision (password credential, public key, --check-config OK)"
else
  fail "runbook 3 provision" "rc $rc: $(brief)"
fi

run_block start
run_block selftest
if [ "$rc" = 1 ] && grep -q 'SELFTEST: FAIL' <<<"$out" \
  && grep -q 'GRANT SELECT ON cutter_governance.verify_result' <<<"$out" \
  && grep -q 'GRANT SELECT ON cutter_governance.cut_change_set_affected_row' <<<"$out"; then
  pass "runbook 4 selftest FAILs naming the two grants"
else
  fail "runbook 4 selftest FAILs naming the two grants" "rc $rc: $(brief)"
fi

run_sql grants
grants_rc=$rc
run_block selftest
if [ "$grants_rc" = 0 ] && [ "$rc" = 0 ] && grep -q 'SELFTEST: PASS' <<<"$out" \
  && [[ "$(svc StatusText)" == ready:* ]]; then
  pass "runbook 4b grants, then selftest PASS (STATUS: $(svc StatusText))"
else
  fail "runbook 4b grants, then selftest PASS" "grants rc $grants_rc, selftest rc $rc, STATUS '$(svc StatusText)': $(brief)"
fi

run_block backup
run_id=$(session_var RUN_ID)
sha=$(session_var ENVELOPE_SHA256)
if [ "$rc" = 0 ] && [ ${#sha} = 64 ] && in_c test -f "/var/lib/cutter/backups/$run_id.sql.gpg"; then
  pass "runbook 5 first backup ($run_id)"
else
  fail "runbook 5 first backup" "rc $rc, sha256 '$sha': $(brief)"
fi
first_run_id=$run_id
first_sha=$sha

run_block first-run-check
if [ "$rc" = 0 ] && grep -q 'Good signature' <<<"$out"; then
  pass "runbook 5 verify, pinned signer, gpg --verify of the manifest"
else
  fail "runbook 5 verify, pinned signer, gpg --verify of the manifest" "rc $rc: $(brief)"
fi

run_block gpg-decrypt "$passphrase1"$'\n'
copies=$(tail -n 1 <<<"$out")
if [ "$rc" = 0 ] && [ "$copies" = 9 ]; then
  pass "runbook 5 gpg --decrypt opens the first backup (9 COPY blocks)"
else
  fail "runbook 5 gpg --decrypt" "rc $rc, COPY blocks '$copies': $(brief)"
fi

pid_before=$(svc MainPID)
run_block disable
disable_rc=$rc
run_block selftest
status_text=$(svc StatusText)
if [ "$disable_rc" = 0 ] && [ "$rc" = 1 ] && grep -q 'required env var BACKUP_GPG_FPR is unset' <<<"$out" \
  && [ "$(svc ActiveState)" = active ] && [ "$(svc MainPID)" = "$pid_before" ] \
  && [[ "$status_text" == FAIL-CLOSED* ]]; then
  pass "runbook 6 reload without the fingerprint: FAIL-CLOSED, daemon up (STATUS: $status_text)"
else
  fail "runbook 6 disable" "reload rc $disable_rc, selftest rc $rc, $(svc ActiveState), pid $pid_before -> $(svc MainPID), STATUS '$status_text': $(brief)"
fi
# Exit 1: the daemon said no (FailedPrecondition, naming the unset
# variable); 3 would be a daemon that is not there, 2 a usage error.
out=$(in_c cutterctl backup --run-id refused-while-disabled 2>&1)
backup_rc=$?
if [ "$backup_rc" = 1 ] && grep -q 'FailedPrecondition' <<<"$out" \
  && grep -q 'required env var BACKUP_GPG_FPR is unset' <<<"$out" \
  && absent /var/lib/cutter/backups/refused-while-disabled.sql.gpg; then
  pass "runbook 6 a backup refuses while disabled (exit 1, FailedPrecondition, nothing written)"
else
  fail "runbook 6 a backup refuses while disabled" "exit $backup_rc (want 1): $(tail -n 2 <<<"$out" | tr '\n' ' ')"
fi

run_block enable
enable_rc=$rc
run_block selftest
if [ "$enable_rc" = 0 ] && [ "$rc" = 0 ] && [[ "$(svc StatusText)" == ready:* ]] && [ "$(svc MainPID)" = "$pid_before" ]; then
  pass "runbook 7 line restored, reload: PASS, same daemon"
else
  fail "runbook 7 enable" "reload rc $enable_rc, selftest rc $rc, STATUS '$(svc StatusText)': $(brief)"
fi

run_block rotate-keep-old
keep_rc=$rc
run_block keygen "$passphrase2"$'\n'
keygen2_rc=$rc
new_fpr=$(session_var FPR)
run_block rotate
rotate_rc=$rc
run_block backup
rotated_run=$(session_var RUN_ID)
listing=$(in_c cutterctl list 2>&1)
if [ "$keep_rc" = 0 ] && [ "$keygen2_rc" = 0 ] && [ "$rotate_rc" = 0 ] && [ "$rc" = 0 ] && [ "$new_fpr" != "$fpr" ] \
  && grep "$rotated_run" <<<"$listing" | grep -q "${new_fpr: -8}" \
  && grep "$first_run_id" <<<"$listing" | grep -q "${fpr: -8}"; then
  pass "runbook 8a rotation: the next backup needs the new key, the first the old"
else
  fail "runbook 8a rotation" "rc $keep_rc/$keygen2_rc/$rotate_rc/$rc, new FPR '$new_fpr': $(tail -n 4 <<<"$listing" | tr '\n' ' ') $(brief)"
fi
# The old key alone still opens the transition period's backup: a keyring
# holding only the old secret key (passphrase in a 0600 file, never argv).
(umask 077; printf '%s' "$passphrase1" > "$work/root/root/.systest/old-pp")
in_c gpg --batch --yes --pinentry-mode loopback --passphrase-file /root/.systest/old-pp \
  --export-secret-keys "$fpr" > "$work/root/root/.systest/old-secret.gpg" 2>/dev/null
# shellcheck disable=SC2016 # expanded by the container's bash
old_copies=$(in_c bash -c 'export GNUPGHOME=$(mktemp -d) && gpg --batch -q --import /root/.systest/old-secret.gpg \
  && gpg --batch -q --pinentry-mode loopback --passphrase-file /root/.systest/old-pp --decrypt "$1" | grep -c "^COPY "' \
  _ "/var/lib/cutter/backups/$rotated_run.sql.gpg" 2>&1)
if [ "$old_copies" = 9 ]; then
  pass "runbook 8a the old key alone still decrypts the rotated backup"
else
  fail "runbook 8a the old key alone still decrypts the rotated backup" "$old_copies"
fi

run_block restore-role
role_rc=$rc
run_block restore "$passphrase2"$'\n'
restored=$(psql_su -d directus_restore -At -c "SELECT count(*) FROM cutter_governance.cut_change_set_affected_row" 2>&1)
if [ "$role_rc" = 0 ] && [ "$rc" = 0 ] && [ "$restored" = 1080 ] && absent /dev/shm/backup-secret.asc; then
  pass "runbook 8b restore into a scratch database (row counts match, key file shredded)"
else
  fail "runbook 8b restore" "role rc $role_rc, restore rc $rc, restored rows '$restored': $(brief)"
fi

# A bad run after the last backup ($RUN_ID): three tables changed.
psql_su -d directus -c "UPDATE cutter_governance.cut_run SET label = 'bad run' WHERE id <= 3; \
  DELETE FROM cutter_governance.cut_plan WHERE id = 5; INSERT INTO cutter_governance.cut_target (label) VALUES ('bad row');" > /dev/null
run_block recover-verify
verify_rc=$rc
run_block recover-beside "$passphrase2"$'\n'
beside_rc=$rc
beside_tables=$(psql_su -d directus -At -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'cutter_restore_$rotated_run'" 2>&1)
run_block recover-diff
diff_out=$out
diff_rc=$rc
changed=$(in_c cat "/root/changed-$rotated_run.jsonl" 2>/dev/null | wc -l)
if [ "$verify_rc" = 0 ] && [ "$beside_rc" = 0 ] && [ "$beside_tables" = 9 ] && [ "$diff_rc" = 0 ] && [ "$changed" = 5 ] \
  && grep -q '3 of 9 tables changed: 1 inserted, 1 deleted, 3 updated' <<<"$diff_out" && absent /dev/shm/backup-secret.asc; then
  pass "runbook 8c a run went wrong: verify, 9 tables beside live, diff names the 5 changed rows"
else
  fail "runbook 8c beside live and diff" "rc $verify_rc/$beside_rc/$diff_rc, beside tables '$beside_tables', changed rows '$changed': $(tail -n 4 <<<"$diff_out" | tr '\n' ' ')"
fi
run_block recover-revert-sql
sql_rc=$rc
sql_out=$out
sql_mode=$(in_c stat -c %a "/root/revert-$rotated_run.sql" 2>&1)
run_block recover-apply
apply_rc=$rc
bad_left=$(psql_su -d directus -At -c "SELECT count(*) FROM cutter_governance.cut_run WHERE label = 'bad run'" 2>&1)
plan5=$(psql_su -d directus -At -c "SELECT count(*) FROM cutter_governance.cut_plan WHERE id = 5" 2>&1)
if [ "$sql_rc" = 0 ] && [ "$sql_mode" = 600 ] && grep -q '^\\restrict ' <<<"$sql_out" && [ "$apply_rc" = 0 ] \
  && [ "$bad_left" = 0 ] && [ "$plan5" = 0 ] && in_c cutterctl list | grep -q "revert-$rotated_run-"; then
  pass "runbook 8c revert cut_run: SQL to review (0600, restricted), --apply after a pre-revert backup; other tables untouched"
else
  fail "runbook 8c revert" "rc $sql_rc/$apply_rc, mode '$sql_mode', 'bad run' rows left '$bad_left', cut_plan 5 '$plan5': $(brief)"
fi
run_block recover-drop
left_schema=$(psql_su -d directus -At -c "SELECT count(*) FROM pg_namespace WHERE nspname = 'cutter_restore_$rotated_run'" 2>&1)
if [ "$rc" = 0 ] && [ "$left_schema" = 0 ]; then
  pass "runbook 8c drop the tables beside live"
else
  fail "runbook 8c drop" "rc $rc, schema left '$left_schema': $(brief)"
fi

drillpass=$(head -c 18 /dev/urandom | base64)
run_block drill-key "$drillpass"$'\n'
key_rc=$rc
run_block drill-enable
drill_out=$out
drill_rc=$rc
drill_left=$(psql_su -At -c "SELECT count(*) FROM pg_database WHERE datname LIKE 'cutter_drill_%'" 2>&1)
drill_role=$(psql_su -At -c "SELECT count(*) FROM pg_roles WHERE rolname = 'cutter_drill'" 2>&1)
if [ "$key_rc" = 0 ] && [ "$drill_rc" = 0 ] && grep -q 'VERDICT=PASS' <<<"$drill_out" \
  && grep -q '^cutter_backup_drill_success 1$' <<<"$drill_out" && [ "$drill_left" = 0 ] && [ "$drill_role" = 0 ] \
  && in_c test -s /var/lib/cutter-drill/report.md && [ "$(in_c systemctl is-enabled cutter-drill.timer)" = enabled ]; then
  pass "runbook 8d restore drill: a dedicated key, the timer on, the service once: PASS in the journal and the metrics, nothing left"
else
  fail "runbook 8d restore drill" "rc $key_rc/$drill_rc, left '$drill_left' dbs '$drill_role' roles: $(tail -n 6 <<<"$drill_out" | tr '\n' ' ') $(in_c journalctl -u cutter-drill.service -n 8 --no-pager 2>&1 | tr '\n' ' ')"
fi

run_block retention-config
cfg_rc=$rc
run_block retention
if [ "$cfg_rc" = 0 ] && [ "$rc" = 0 ] && in_c test -f "/var/lib/cutter/backups/$first_run_id.sql.gpg"; then
  pass "runbook retention: prune, pin, prune --confirm, unpin (young backups kept)"
else
  fail "runbook retention" "rc $cfg_rc/$rc: $(brief)"
fi

read -r n_blocks bad_lines <<<"$(tr '\n' ' ' <<<"$doc_blocks")"
unrun=()
for m in $markers; do [ -n "${ran[$m]:-}" ] || unrun+=("$m"); done
if [ -n "${bad_lines:-}" ]; then
  fail "runbook coverage" "docs/operations.md has blocks without a systest marker at$bad_lines"
elif [ "${#unrun[@]}" -gt 0 ]; then
  fail "runbook coverage" "marked blocks this test never runs: ${unrun[*]}"
else
  pass "runbook coverage: all $n_blocks blocks of docs/operations.md ran"
fi

# --- lifecycle under systemd ---------------------------------------------------------
# Partials start with '.'; a clean state has none.
# find must answer (a missing directory or a failed nsenter is not clean).
backups_clean() {
  local left
  left=$(in_c find /var/lib/cutter/backups -mindepth 1 -maxdepth 1 -name '.*') && [ -z "$left" ]
}

# A backup (run_id $1) held up for 8 s: a session holds an exclusive lock
# on one table, so pg_dump waits. Sets $locker and $backup_client (pids of
# the background jobs) and $waiting (sessions of cutter_exec waiting on it).
backup_behind_lock() {
  psql_su -d directus -c "BEGIN; LOCK TABLE cutter_governance.cut_run IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;" > /dev/null 2>&1 &
  locker=$!
  sleep 0.5
  in_c cutterctl backup --run-id "$1" > "$work/$1.out" 2>&1 &
  backup_client=$!
  waiting=0
  for _ in $(seq 40); do
    waiting=$(psql_su -At -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'cutter_exec' AND wait_event_type = 'Lock'")
    [ "${waiting:-0}" -gt 0 ] && break
    sleep 0.25
  done
}

# systemctl stop during that backup: the stop waits for it, it completes,
# nothing partial is left.
in_c systemctl start cutter-backupd.service
backup_behind_lock stop-during-backup
t_stop=$SECONDS
in_c systemctl stop cutter-backupd.service 2> "$work/stop.err"
stop_rc=$?
stop_secs=$((SECONDS - t_stop))
wait "$backup_client"; client_rc=$?
wait "$locker" 2>/dev/null
result=$(svc Result)
if [ "${waiting:-0}" -gt 0 ] && [ "$stop_rc" = 0 ] && [ "$result" = success ] && [ "$(svc ActiveState)" = inactive ] \
  && [ "$client_rc" = 0 ] && in_c test -f /var/lib/cutter/backups/stop-during-backup.manifest.json \
  && backups_clean && in_c cutterctl verify stop-during-backup > /dev/null 2>&1; then
  pass "lifecycle stop during a backup: it finished and verifies, stop took ${stop_secs} s, Result=success, no partials"
else
  fail "lifecycle stop during a backup" "dump waiting on the lock: ${waiting:-0}, stop rc $stop_rc in ${stop_secs} s, Result=$result, client rc $client_rc: $(tail -n 2 "$work/stop-during-backup.out" | tr '\n' ' '); files: $(in_c ls -A /var/lib/cutter/backups | tr '\n' ' ')"
fi

# SIGSTOP: the watchdog notices the silence and systemd restarts the daemon.
in_c systemctl start cutter-backupd.service
pid1=$(svc MainPID)
restarts1=$(svc NRestarts)
# Seconds of a unit time property (systemd prints them as "30s", "1min 30s").
secs() { in_c systemd-analyze timespan "$(svc "$1")" | awk '/μs:/ { printf "%d", $2 / 1000000 }'; }
wd_secs=$(secs WatchdogUSec)
rs_secs=$(secs RestartUSec)
t_wd=$SECONDS
in_c systemctl kill -s SIGSTOP cutter-backupd.service
limit=$((wd_secs + rs_secs + 15))
while [ $((SECONDS - t_wd)) -lt "$limit" ]; do
  pid2=$(svc MainPID)
  [ "$pid2" != "$pid1" ] && [ "$pid2" != 0 ] && [ "$(svc ActiveState)" = active ] && break
  sleep 1
done
wd_took=$((SECONDS - t_wd))
if [ "$(svc MainPID)" != "$pid1" ] && [ "$(svc ActiveState)" = active ] && [ "$(svc NRestarts)" -gt "$restarts1" ] \
  && in_c journalctl -u cutter-backupd --no-pager -q | grep -q 'Watchdog timeout'; then
  pass "lifecycle SIGSTOP: watchdog timeout, restarted in ${wd_took} s (WatchdogSec ${wd_secs} s + RestartSec ${rs_secs} s)"
else
  fail "lifecycle SIGSTOP" "after ${wd_took} s: pid $pid1 -> $(svc MainPID), $(svc ActiveState), NRestarts $restarts1 -> $(svc NRestarts)"
fi

pid1=$(svc MainPID)
in_c systemctl restart cutter-backupd.service
restart_rc=$?
selftest_out=$(in_c cutterctl selftest 2>&1); selftest_rc=$?
if [ "$restart_rc" = 0 ] && [ "$(svc MainPID)" != "$pid1" ] && [ "$(svc ActiveState)" = active ] \
  && [ "$selftest_rc" = 0 ]; then
  pass "lifecycle systemctl restart: new process, selftest PASS"
else
  fail "lifecycle systemctl restart" "rc $restart_rc, pid $pid1 -> $(svc MainPID), $(svc ActiveState), selftest rc $selftest_rc: $(tr '\n' ' ' <<<"$selftest_out")"
fi

# journalctl prints "-- No entries --" when nothing matches: look for the
# entry itself, its message and its SHA256 field (the envelope's).
journal=$(in_c journalctl -u cutter-backupd --no-pager -o cat "RUN_ID=$first_run_id" 2>&1)
fields=$(in_c journalctl -u cutter-backupd --no-pager -o verbose "RUN_ID=$first_run_id" 2>&1)
if grep -q "^backup complete run_id=$first_run_id size=[0-9]* sha256=$first_sha " <<<"$journal" \
  && grep -qx " *SHA256=$first_sha" <<<"$fields"; then
  pass "lifecycle journalctl -u cutter-backupd RUN_ID=$first_run_id: $(head -n 1 <<<"$journal")"
else
  fail "lifecycle journalctl RUN_ID=" "no 'backup complete' entry with SHA256=$first_sha for RUN_ID=$first_run_id: $journal"
fi

score() { awk '/Overall exposure level/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+$/) { print $i; exit } }'; }
online=$(in_c systemd-analyze security --no-pager cutter-backupd.service 2>&1 | score)
offline=$(in_c systemd-analyze security --no-pager --offline=true /usr/lib/systemd/system/cutter-backupd.service 2>&1 | score)
if [ -n "$online" ] && [ "$online" = "$offline" ]; then
  pass "lifecycle systemd-analyze security: $online running, $offline offline"
else
  fail "lifecycle systemd-analyze security" "running unit '$online', offline '$offline'"
fi

# --- package lifecycle ------------------------------------------------------------
# Upgrade N -> N+1 while a backup runs: the new postinst restarts the
# daemon, which first lets the backup finish.
before=$(in_c ls /var/lib/cutter/backups | sort)
pid1=$(svc MainPID)
cursor=$(in_c journalctl --show-cursor -n 0 -q | sed -n 's/^-- cursor: //p')
backup_behind_lock upgrade-during-backup
out=$(in_c dpkg -i "/root/upgrade/$(basename "$deb2")" 2>&1)
upgrade_rc=$?
wait "$backup_client"; client_rc=$?
wait "$locker" 2>/dev/null
after=$(in_c ls /var/lib/cutter/backups | sort)
lost=$(comm -23 <(printf '%s\n' "$before") <(printf '%s\n' "$after"))
if [ "$upgrade_rc" = 0 ] && [ "${waiting:-0}" -gt 0 ] && [ "$client_rc" = 0 ] \
  && [ "$(in_c dpkg-query -W -f="\${Version}" cutter-backup)" = "$(dpkg-deb -f "$deb2" Version)" ] \
  && [ "$(svc ActiveState)" = active ] && [ "$(svc MainPID)" != "$pid1" ] \
  && in_c journalctl --after-cursor "$cursor" -u cutter-backupd --no-pager -q | grep -q 'Deactivated successfully' \
  && [ -z "$lost" ] && in_c cutterctl verify upgrade-during-backup > /dev/null 2>&1 && backups_clean \
  && in_c grep -q '^\[\[key.additional_recipients\]\]' /etc/cutter/backupd.toml \
  && in_c cutterctl selftest > /dev/null 2>&1; then
  pass "package upgrade $(dpkg-deb -f "$deb1" Version) -> $(dpkg-deb -f "$deb2" Version) during a backup: it finished and verifies, daemon restarted cleanly, backups and config edits kept, selftest PASS"
else
  fail "package upgrade" "rc $upgrade_rc, dump waiting: ${waiting:-0}, client rc $client_rc, $(svc ActiveState), pid $pid1 -> $(svc MainPID), lost: ${lost:-none}: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
fi

before=$after
out=$(in_c dpkg --purge cutter-backup 2>&1)
purge_rc=$?
if [ "$purge_rc" = 0 ] && grep -q 'KEPT' <<<"$out" && grep -q '/var/lib/cutter/backups' <<<"$out" \
  && [ "$(in_c ls /var/lib/cutter/backups | sort)" = "$before" ] \
  && absent /usr/bin/cutter-backupd && absent /usr/lib/systemd/system/cutter-backupd.service \
  && absent /etc/cutter/backupd.toml && absent /run/cutter/backupd.sock \
  && [ "$(svc ActiveState)" = inactive ] && [ "$(unit_state cutter-backupd.socket)" = inactive ]; then
  pass "package purge: removed, backups kept and it says so"
else
  fail "package purge" "rc $purge_rc: $(tail -n 4 <<<"$out" | tr '\n' ' ')"
fi

summary
[ "$failed" = 0 ]
