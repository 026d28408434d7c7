//! The benchmark datasets: the nine `cutter_governance` tables filled with a
//! realistic mix (text, jsonb, timestamps, integers, numerics), sized by the
//! plain dump they produce.

/// The tables and their share of the rows, largest first.
pub const TABLES: [(&str, u32); 9] = [
    ("cut_audit_log", 38),
    ("cut_change_set_affected_row", 24),
    ("verify_result", 14),
    ("cut_change_set", 9),
    ("cut_target", 6),
    ("cut_run", 4),
    ("cut_plan", 2),
    ("cut_approval", 2),
    ("cut_lock", 1),
];

/// Average plain-dump bytes of one generated row (measured, see `docs/benchmarks.md`).
pub const BYTES_PER_ROW: u64 = 300;

/// SQL creating the schema, the role's grants, and rows for a dump of about `mb` MB.
pub fn sql(mb: u64) -> String {
    let rows_total = mb * 1_000_000 / BYTES_PER_ROW;
    let mut sql = String::from(
        "CREATE SCHEMA cutter_governance; GRANT USAGE ON SCHEMA cutter_governance TO cutter_exec;\n",
    );
    for (name, share) in TABLES {
        let rows = (rows_total * u64::from(share) / 100).max(10);
        sql.push_str(&format!(
            "CREATE TABLE cutter_governance.{name} (\
               id bigserial PRIMARY KEY, run_id text NOT NULL, seq int NOT NULL, \
               state text NOT NULL, amount numeric(14,2), note text, doc jsonb, \
               created_at timestamptz NOT NULL, updated_at timestamptz);\n\
             INSERT INTO cutter_governance.{name} (run_id, seq, state, amount, note, doc, created_at, updated_at) \
             SELECT 'run-' || (g / 1000), g % 1000, (ARRAY['planned','applied','verified','reverted'])[1 + g % 4], \
                    (g % 100000) * 1.37, \
                    'row ' || g || ': ' || md5(g::text) || ' ' || repeat(substr(md5((g * 7)::text), 1, 16), 6), \
                    jsonb_build_object('target', 'directus.items_' || (g % 97), 'before', g % 1013, \
                                       'after', (g * 31) % 1013, 'tags', jsonb_build_array('cut', 'auto', g % 7)), \
                    timestamptz '2026-01-01' + g * interval '1 second', \
                    CASE WHEN g % 3 = 0 THEN timestamptz '2026-06-01' + g * interval '1 second' END \
             FROM generate_series(1, {rows}) g;\n\
             GRANT SELECT ON cutter_governance.{name} TO cutter_exec;\n"
        ));
    }
    sql.push_str(
        "GRANT SELECT ON ALL SEQUENCES IN SCHEMA cutter_governance TO cutter_exec;\nANALYZE;\n",
    );
    sql
}
