//! The COPY blocks of an authenticated plain dump, and nothing else: the
//! rows `--beside-live` loads come from here, as COPY text-format lines
//! handed to the live server's `COPY … FROM STDIN`, never as SQL. Every
//! other line of the dump is skipped unread.
//!
//! A block starts with `COPY schema.table (col, …) FROM stdin;` (names as
//! pg_dump quotes them) on a line that starts outside every string and
//! comment (`sqllex`: a comment can hold a header-looking line), and ends
//! with a line `\.`; in text format a row is one line (newlines in values
//! are escaped), so a row can never be `\.`. Rows of a block the caller
//! does not read are skipped as rows, never looked at as headers.

use std::io::BufRead;

use cutter_core::config::TableName;
use cutter_core::sqllex::SqlLexer;

/// A COPY block's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The table.
    pub table: TableName,
    /// The column list, unquoted, in the dump's order.
    pub columns: Vec<String>,
}

/// Reads COPY blocks from a dump.
pub struct Blocks<R> {
    inner: R,
    line: Vec<u8>,
    sql: SqlLexer,
    in_block: bool,
}

impl<R: BufRead> Blocks<R> {
    /// Over `inner`, positioned before any block.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            line: Vec::new(),
            sql: SqlLexer::new(),
            in_block: false,
        }
    }

    /// The next block's header, skipping everything outside blocks;
    /// `None` at the end of the dump.
    pub fn next_header(&mut self) -> std::io::Result<Option<Header>> {
        while self.in_block {
            self.next_row()?;
        }
        loop {
            self.line.clear();
            if self.inner.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(None);
            }
            self.sql.feed(&self.line);
            if self.sql.line_began_at_top()
                && let Some(h) = parse_header(trim_eol(&self.line))
            {
                self.in_block = true;
                return Ok(Some(h));
            }
        }
    }

    /// The next row line of the current block, with its newline; `None`
    /// at its `\.` (or at the end of a truncated dump).
    pub fn next_row(&mut self) -> std::io::Result<Option<&[u8]>> {
        if !self.in_block {
            return Ok(None);
        }
        self.line.clear();
        if self.inner.read_until(b'\n', &mut self.line)? == 0 || trim_eol(&self.line) == b"\\." {
            self.in_block = false;
            return Ok(None);
        }
        if !self.line.ends_with(b"\n") {
            self.line.push(b'\n');
        }
        Ok(Some(&self.line))
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses `COPY schema.table (a, "B c") FROM stdin;`.
pub fn parse_header(line: &[u8]) -> Option<Header> {
    let text = std::str::from_utf8(line).ok()?;
    let rest = text.strip_prefix("COPY ")?.strip_suffix(" FROM stdin;")?;
    let (schema, rest) = ident(rest)?;
    let rest = rest.strip_prefix('.')?;
    let (name, rest) = ident(rest)?;
    let mut columns = Vec::new();
    let mut rest = rest.trim_start();
    if let Some(mut list) = rest.strip_prefix('(') {
        loop {
            let (col, after) = ident(list.trim_start())?;
            columns.push(col);
            let after = after.trim_start();
            if let Some(more) = after.strip_prefix(',') {
                list = more;
            } else {
                rest = after.strip_prefix(')')?;
                break;
            }
        }
    }
    if !rest.trim().is_empty() {
        return None;
    }
    let table = TableName::parse(&format!("{schema}.{name}")).ok()?;
    // TableName splits at the first dot: a schema holding one is not ours.
    (table.schema == schema && table.name == name).then_some(Header { table, columns })
}

/// One identifier as pg_dump writes it: `"quoted ""like"" this"` or bare.
fn ident(s: &str) -> Option<(String, &str)> {
    if let Some(mut rest) = s.strip_prefix('"') {
        let mut out = String::new();
        loop {
            let end = rest.find('"')?;
            out.push_str(&rest[..end]);
            rest = &rest[end + 1..];
            match rest.strip_prefix('"') {
                Some(more) => {
                    out.push('"');
                    rest = more;
                }
                None => return (!out.is_empty()).then_some((out, rest)),
            }
        }
    }
    let end = s.find(['.', ',', '(', ')', ' ']).unwrap_or(s.len());
    (end > 0).then(|| (s[..end].to_owned(), &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_parsed_with_pg_dumps_quoting() {
        let h =
            parse_header(br#"COPY cutter_governance."Odd ""x""" (id, "Label", "a,b") FROM stdin;"#)
                .expect("header");
        assert_eq!(h.table.schema, "cutter_governance");
        assert_eq!(h.table.name, "Odd \"x\"");
        assert_eq!(h.columns, ["id", "Label", "a,b"]);
        assert!(parse_header(b"COPY s.t (a) FROM stdin").is_none());
        assert!(parse_header(b"SELECT 1;").is_none());
        assert!(parse_header(b"COPY s.t (a) TO stdout;").is_none());
    }

    #[test]
    fn skipped_rows_and_strings_never_open_a_block() {
        let dump = "COMMENT ON TABLE s.a IS 'x\nCOPY s.t (a) FROM stdin;\nforged\n\\.\n';\n\
                    COPY s.skip (a) FROM stdin;\nCOPY s.t (a) FROM stdin;\n\\.\n\
                    COPY s.t (a) FROM stdin;\nreal\n\\.\n";
        let mut b = Blocks::new(dump.as_bytes());
        let h = b.next_header().expect("read").expect("first");
        assert_eq!(h.table.to_string(), "s.skip");
        let h = b.next_header().expect("read").expect("second");
        assert_eq!(h.table.to_string(), "s.t");
        assert_eq!(b.next_row().expect("read"), Some(&b"real\n"[..]));
        assert_eq!(b.next_row().expect("read"), None);
        assert_eq!(b.next_header().expect("read"), None);
    }

    #[test]
    fn blocks_end_at_their_marker_and_skip_everything_else() {
        let dump = "SET x = 1;\nCOPY s.t (a, b) FROM stdin;\n1\tx\\ny\n2\t\\\\.\n\\.\nCREATE TABLE z ();\nCOPY s.u (c) FROM stdin;\r\n7\r\n\\.\r\n";
        let mut b = Blocks::new(dump.as_bytes());
        let h = b.next_header().expect("read").expect("first");
        assert_eq!(h.table.to_string(), "s.t");
        let mut rows = Vec::new();
        while let Some(r) = b.next_row().expect("read") {
            rows.push(String::from_utf8_lossy(r).into_owned());
        }
        assert_eq!(rows, ["1\tx\\ny\n", "2\t\\\\.\n"]);
        let h = b.next_header().expect("read").expect("second");
        assert_eq!(h.columns, ["c"]);
        assert_eq!(b.next_row().expect("read"), Some(&b"7\r\n"[..]));
        assert_eq!(b.next_row().expect("read"), None);
        assert_eq!(b.next_header().expect("read"), None);
    }
}
