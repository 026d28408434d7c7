//! The Prometheus text exposition format (version 0.0.4), written by hand
//! for both writers: the daemon's metrics (the `Metrics` RPC and
//! `metrics.textfile`) and `cutterctl drill`'s textfile. Kept as the plain
//! Prometheus text format rather than OpenMetrics on purpose: node_exporter's
//! textfile collector and `promtool check metrics` read it as it is, and
//! counter names keep their `_total` in their `# TYPE` line.

use std::fmt::Write as _;

/// A Prometheus text exposition being written: one `# HELP` and `# TYPE`
/// per family, then its samples.
#[derive(Debug, Default)]
pub struct Exposition(String);

impl Exposition {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn samples<L: AsRef<[(K, V)]>, K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        name: &str,
        samples: &[(L, f64)],
    ) {
        for (labels, value) in samples {
            let labels: Vec<String> = labels
                .as_ref()
                .iter()
                .map(|(k, v)| format!("{}=\"{}\"", k.as_ref(), escape_label(v.as_ref())))
                .collect();
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {value}");
            } else {
                let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
            }
        }
    }

    /// A gauge without labels.
    pub fn single(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, help, "gauge");
        self.samples::<[(&str, &str); 0], &str, &str>(name, &[([], value)]);
    }

    /// A gauge family: one sample per label set.
    pub fn gauge<L: AsRef<[(K, V)]>, K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        name: &str,
        help: &str,
        samples: &[(L, f64)],
    ) {
        self.header(name, help, "gauge");
        self.samples(name, samples);
    }

    /// A counter family (`name` ends in `_total`).
    pub fn counter<L: AsRef<[(K, V)]>, K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        name: &str,
        help: &str,
        samples: &[(L, f64)],
    ) {
        self.header(name, help, "counter");
        self.samples(name, samples);
    }

    /// The text.
    pub fn into_text(self) -> String {
        self.0
    }
}

/// A label value: backslash, quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_one_header_and_escaped_labels() {
        let mut e = Exposition::default();
        e.single("a_seconds", "A.", 1.5);
        e.gauge("b_rows", "B.", &[([("table", "s.\"t\"\n")], 2.0)]);
        e.counter("c_total", "C.", &[([("result", String::from("ok"))], 3.0)]);
        assert_eq!(
            e.into_text(),
            "# HELP a_seconds A.\n# TYPE a_seconds gauge\na_seconds 1.5\n\
             # HELP b_rows B.\n# TYPE b_rows gauge\nb_rows{table=\"s.\\\"t\\\"\\n\"} 2\n\
             # HELP c_total C.\n# TYPE c_total counter\nc_total{result=\"ok\"} 3\n"
        );
    }
}
