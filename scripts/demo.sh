#!/usr/bin/env bash
# The product end to end on a throwaway PostgreSQL: the operator report's
# world (9 tables in cutter_governance, a cutter_exec role missing two
# grants), a fresh GnuPG key, the daemon on a temp socket, selftest FAIL
# naming the grants, the grants, selftest PASS, a backup, `gpg --decrypt`,
# row counts against the manifest. Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
# scripts/test.sh passes its cargo features on (CUTTER_FEATURES), so the demo
# does not rebuild the binaries the test suite then runs.
cargo build --workspace --bins --locked -q ${CUTTER_FEATURES:+--features "$CUTTER_FEATURES"}
bin="$PWD/target/debug"

pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
work=$(mktemp -d /tmp/cutter-demo.XXXXXX)
chmod 0755 "$work"
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  as_pg "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  gpgconf --homedir "$work/gnupg" --kill all 2>/dev/null || true
  [ -n "${KEEP:-}" ] && { cat "$work/daemon.log" >&2; } || true
  rm -rf "$work"
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. A throwaway PostgreSQL with the cutter_governance schema"
# PostgreSQL (as postgres) gets its own directories; $work itself stays
# root's: the daemon refuses a config in a directory anyone else can write.
mkdir "$work/sock" "$work/pg" "$work/pglog"
chmod 0700 "$work/pg"
[ "$(id -u)" -eq 0 ] && chown postgres: "$work/sock" "$work/pg" "$work/pglog"
as_pg "$pgbin/initdb" -D "$work/pg" -U postgres --auth-local=trust --no-sync >/dev/null
# Socket only, in our own directory (no port to collide with); the role
# authenticates with its password, the superuser (demo setup) by trust.
port=5432
printf 'local all postgres trust\nlocal all all scram-sha-256\n' > "$work/pg/pg_hba.conf"
cat >> "$work/pg/postgresql.auto.conf" <<CONF
listen_addresses = ''
port = $port
unix_socket_directories = '$work/sock'
fsync = off
CONF
as_pg "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pglog/pg.log" -w start >/dev/null
psql_su() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h "$work/sock" -p "$port" -U postgres "$@"; }
dbpass=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$dbpass" > "$work/db-password"; chmod 0600 "$work/db-password"
psql_su -d postgres -c "CREATE DATABASE directus" \
  -c "CREATE ROLE cutter_exec LOGIN PASSWORD '$dbpass'"
tables=(cut_run cut_plan cut_target cut_change_set cut_approval cut_lock cut_audit_log verify_result cut_change_set_affected_row)
{
  echo "CREATE SCHEMA cutter_governance; GRANT USAGE ON SCHEMA cutter_governance TO cutter_exec;"
  n=0
  for t in "${tables[@]}"; do
    n=$((n + 1))
    echo "CREATE TABLE cutter_governance.$t (id bigserial PRIMARY KEY, label text, doc jsonb, at timestamptz DEFAULT now());"
    echo "INSERT INTO cutter_governance.$t (label, doc) SELECT '$t ' || g, jsonb_build_object('g', g) FROM generate_series(1, $((n * 120))) g;"
  done
  # The operator report's state: every grant but these two.
  for t in "${tables[@]:0:7}"; do echo "GRANT SELECT ON cutter_governance.$t TO cutter_exec;"; done
  echo "GRANT SELECT ON ALL SEQUENCES IN SCHEMA cutter_governance TO cutter_exec;"
} | psql_su -d directus
echo "9 tables created; cutter_exec lacks SELECT on verify_result and cut_change_set_affected_row"

step "2. A passphrase-protected backup key (works on GnuPG 2.2 and 2.4)"
export GNUPGHOME="$work/gnupg"
mkdir -m 0700 "$GNUPGHOME"
head -c 24 /dev/urandom | base64 > "$work/passphrase"; chmod 0600 "$work/passphrase"
gpg_b() { gpg --batch --pinentry-mode loopback --passphrase-file "$work/passphrase" "$@"; }
gpg_b --quick-gen-key "dot-iu-cutter backup <cutter-backup@example.invalid>" ed25519 cert 2y 2>/dev/null
fpr=$(gpg --list-keys --with-colons "cutter-backup@example.invalid" 2>/dev/null | awk -F: '/^fpr:/{print $10; exit}')
gpg_b --quick-add-key "$fpr" cv25519 encr 2y 2>/dev/null
gpg --armor --export "$fpr" > "$work/cutter-backup-public.asc"
echo "key …${fpr: -8} made; its public half is all the daemon gets"

step "3. The daemon on a temp socket"
mkdir -m 0700 "$work/backups"
echo "BACKUP_GPG_FPR=$fpr" > "$work/env"
cat > "$work/backupd.toml" <<TOML
[server]
socket = "$work/run/backupd.sock"

[key]
cert_file = "$work/cutter-backup-public.asc"
env_file = "$work/env"

[database]
url = "postgres://cutter_exec@/directus?host=$work/sock&port=$port"
password_file = "$work/db-password"

[signer]
key_file = "$work/signer/manifest-signing-key.asc"

[backup]
dir = "$work/backups"
tables = [$(printf '"cutter_governance.%s", ' "${tables[@]}" | sed 's/, $//')]
TOML
"$bin/cutter-backupd" --config "$work/backupd.toml" 2> "$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$work/run/backupd.sock" ] && break; sleep 0.05; done
[ -S "$work/run/backupd.sock" ] || { echo "the daemon did not start:" >&2; cat "$work/daemon.log" >&2; exit 1; }
ctl() { "$bin/cutterctl" --socket "$work/run/backupd.sock" "$@"; }

step "4. Selftest before the grants: FAIL, naming the SQL to run"
# Exit 1 is the daemon's FAIL (2 would be a usage error, 3 no daemon at all),
# and the report names both missing grants.
rc=0
ctl selftest > "$work/selftest.txt" || rc=$?
cat "$work/selftest.txt"
if [ "$rc" != 1 ] || ! grep -q 'SELFTEST: FAIL' "$work/selftest.txt" \
  || ! grep -q 'GRANT SELECT ON cutter_governance.verify_result' "$work/selftest.txt" \
  || ! grep -q 'GRANT SELECT ON cutter_governance.cut_change_set_affected_row' "$work/selftest.txt"; then
  echo "expected selftest to FAIL (exit 1) naming the two missing grants; it exited $rc" >&2
  exit 1
fi

step "5. The operator applies the two grants"
psql_su -d directus -c "GRANT SELECT ON cutter_governance.verify_result TO cutter_exec" \
  -c "GRANT SELECT ON cutter_governance.cut_change_set_affected_row TO cutter_exec"

step "6. Selftest: PASS"
ctl selftest

step "7. The pre-write backup (what the orchestrator's Phase 4 calls)"
ctl backup --run-id demo-run-0001 | tee "$work/envelope.json"

step "8. Pin the daemon's manifest signer and verify the backup against it and the envelope"
ctl signer export > "$work/signer.asc"
sha=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["sha256"])' "$work/envelope.json")
[[ "$sha" =~ ^[0-9a-f]{64}$ ]] || { echo "the envelope has no sha256: '$sha'" >&2; exit 1; }
ctl verify demo-run-0001 --signer "$work/signer.asc" --expect-sha256 "$sha"

step "9. Decrypt with stock gpg and compare row counts with the manifest"
gpg_b --decrypt "$work/backups/demo-run-0001.sql.gpg" 2>/dev/null > "$work/restore.sql"
psql_su -d postgres -c "CREATE DATABASE scratch"
psql_su -d scratch -c "CREATE SCHEMA cutter_governance" -f "$work/restore.sql" >/dev/null
# The signed manifest's tables, one "table<TAB>rows" line each; the
# envelope must list the same ones.
python3 - "$work/backups/demo-run-0001.manifest.json" "$work/envelope.json" > "$work/counts.tsv" <<'PY'
import json, sys
def tables(path):
    return [(t["table"], int(t["rows"])) for t in json.load(open(path))["tables"]]
manifest, envelope = tables(sys.argv[1]), tables(sys.argv[2])
if manifest != envelope:
    sys.exit(f"the envelope's tables {envelope} are not the manifest's {manifest}")
for table, rows in manifest:
    print(f"{table}\t{rows}")
PY
listed=$(wc -l < "$work/counts.tsv")
printf '%-45s %10s %10s\n' table manifest restored
ok=1
compared=0
while IFS=$'\t' read -r table rows; do
  got=$(psql_su -d scratch -At -c "SELECT count(*) FROM $table")
  printf '%-45s %10s %10s\n' "$table" "$rows" "$got"
  [ "$rows" = "$got" ] || ok=0
  compared=$((compared + 1))
done < "$work/counts.tsv"
echo "$compared of $listed tables in the manifest compared (${#tables[@]} configured)"
[ "$ok" = 1 ] || { echo "row counts differ" >&2; exit 1; }
if [ "$compared" -ne "$listed" ] || [ "$listed" -ne "${#tables[@]}" ]; then
  echo "compared $compared tables; the manifest lists $listed, the config ${#tables[@]}" >&2
  exit 1
fi

step "10. Status"
ctl status
echo
echo "demo OK: the backup decrypts with gpg and all $compared tables' row counts match its manifest"
