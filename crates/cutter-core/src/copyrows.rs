//! Counts the rows of every `COPY … FROM stdin;` block in a plain pg_dump
//! stream as it passes, so a backup can prove that the row counts in its
//! manifest (taken in the snapshot) are the rows actually in the artifact.
//!
//! In COPY text format a row is exactly one line (newlines in values are
//! escaped), and `\.` ends the block. A header counts only on a line that
//! starts outside strings and comments (`sqllex`): a comment a table owner
//! wrote can hold a header-looking line, which must not count as rows.

use memchr::memchr;

use crate::sqllex::SqlLexer;

/// Lines outside COPY blocks longer than this are not COPY headers.
const HEADER_MAX: usize = 64 * 1024;

/// The running count.
#[derive(Debug)]
pub struct CopyRows {
    line: Vec<u8>,
    line_len: usize,
    copying: Option<(String, u64)>,
    done: Vec<(String, u64)>,
    sql: SqlLexer,
}

impl Default for CopyRows {
    fn default() -> Self {
        Self {
            line: Vec::new(),
            line_len: 0,
            copying: None,
            done: Vec::new(),
            sql: SqlLexer::new(),
        }
    }
}

impl CopyRows {
    /// Feeds the next bytes of the dump.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match memchr(b'\n', data) {
                Some(i) => {
                    if self.copying.is_none() {
                        self.sql.feed(&data[..=i]);
                    }
                    self.push(&data[..i]);
                    self.end_line();
                    data = &data[i + 1..];
                }
                None => {
                    if self.copying.is_none() {
                        self.sql.feed(data);
                    }
                    self.push(data);
                    break;
                }
            }
        }
    }

    fn push(&mut self, part: &[u8]) {
        // Inside a block only "is this line `\.`" matters: keep two bytes.
        let keep = if self.copying.is_some() {
            2
        } else {
            HEADER_MAX
        };
        let room = keep.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
        self.line_len += part.len();
    }

    fn end_line(&mut self) {
        match &mut self.copying {
            Some(_) if self.line_len == 2 && self.line == b"\\." => {
                if let Some(done) = self.copying.take() {
                    self.done.push(done);
                }
            }
            Some((_, rows)) => *rows += 1,
            None if self.line_len == self.line.len() && self.sql.line_began_at_top() => {
                if let Some(table) = copy_header(&self.line) {
                    self.copying = Some((table, 0));
                }
            }
            None => {}
        }
        self.line.clear();
        self.line_len = 0;
    }

    /// `(schema.table, rows)` per finished COPY block, unquoted, in dump order.
    pub fn finish(self) -> Vec<(String, u64)> {
        self.done
    }
}

/// The unquoted `schema.table` of a `COPY schema.table (cols) FROM stdin;` line.
fn copy_header(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    let rest = text.strip_prefix("COPY ")?;
    if !rest.ends_with(" FROM stdin;") {
        return None;
    }
    let mut name = String::new();
    let mut chars = rest.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                name.push('"');
            }
            '"' => quoted = !quoted,
            ' ' if !quoted => break,
            c => name.push(c),
        }
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "SET x = 1;\nCOPY cutter_governance.cut_run (id, label) FROM stdin;\n1\trow one\n2\tline\\nbreak\n\\.\n\nCOPY \"Odd\".\"Ta\"\"ble\" (id) FROM stdin;\n\\.\nCOPY s.t (id) FROM stdin;\n7\n\\.\n";

    #[test]
    fn a_header_inside_a_comment_string_is_not_a_block() {
        let dump = "COMMENT ON TABLE s.a IS 'x\nCOPY s.t (id) FROM stdin;\n1\n\\.\n';\nCOPY s.t (id) FROM stdin;\n7\n8\n\\.\n";
        let mut c = CopyRows::default();
        c.feed(dump.as_bytes());
        assert_eq!(c.finish(), vec![("s.t".to_owned(), 2)]);
    }

    #[test]
    fn counts_rows_per_block_however_the_stream_is_cut() {
        let want = vec![
            ("cutter_governance.cut_run".to_owned(), 2),
            ("Odd.Ta\"ble".to_owned(), 0),
            ("s.t".to_owned(), 1),
        ];
        for chunk in [1, 2, 3, 7, DUMP.len()] {
            let mut c = CopyRows::default();
            for part in DUMP.as_bytes().chunks(chunk) {
                c.feed(part);
            }
            assert_eq!(c.finish(), want, "chunk size {chunk}");
        }
    }
}
