//! Where a plain pg_dump stream is outside any string, quoted name or
//! comment, byte by byte. A COPY header is only a header when its line
//! starts there: pg_dump writes comments, defaults and CHECK texts raw
//! inside quotes, so a table owner's `COMMENT ON TABLE … IS 'x
//! COPY s.t (a) FROM stdin;…'` puts a header-looking line inside a
//! string, which must not open a block (it would let them forge rows).
//!
//! Knows `'…'` (with `''`), `E'…'` (with backslash escapes), `"…"` (with
//! `""`), `$tag$…$tag$`, `-- …` and nested `/* … */`. Fed in pieces of any
//! size; COPY data lines are not SQL and must not be fed.

/// The lexical state.
#[derive(Debug, Clone, Default)]
pub struct SqlLexer {
    state: State,
    /// The previous byte in the normal state (for `--`, `/*`, `E'`, `$`).
    prev: u8,
    /// The byte before `prev` (an `E` prefix must not end a longer word).
    prev2: u8,
    /// The current line started in the normal state.
    line_top: bool,
    /// No byte of the current line seen yet.
    at_line_start: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum State {
    #[default]
    Normal,
    LineComment,
    Block {
        depth: u32,
        prev: u8,
    },
    Single {
        escapes: bool,
        after_quote: bool,
        after_backslash: bool,
    },
    Double {
        after_quote: bool,
    },
    /// Reading `$tag` after an opening `$`.
    Tag(Vec<u8>),
    /// Inside `$tag$…`, matched `matched` bytes of the closing `$tag$`.
    Dollar {
        tag: Vec<u8>,
        matched: usize,
    },
}

fn ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

impl SqlLexer {
    /// At the start of a stream.
    pub fn new() -> Self {
        Self {
            line_top: true,
            at_line_start: true,
            ..Self::default()
        }
    }

    /// True when the current line began outside every string, quoted name
    /// and comment (where a COPY header may stand).
    pub fn line_began_at_top(&self) -> bool {
        self.line_top
    }

    /// Feeds the next bytes of SQL (not COPY data).
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.at_line_start {
                self.line_top = self.state == State::Normal;
                self.at_line_start = false;
            }
            self.byte(b);
            if b == b'\n' {
                self.at_line_start = true;
            }
        }
    }

    fn byte(&mut self, b: u8) {
        // What happens next: stay (None), back to normal (Some(false)), or
        // back to normal with this byte read again there (Some(true)).
        let back: Option<bool> = match &mut self.state {
            State::Normal => {
                self.normal(b);
                None
            }
            State::LineComment => (b == b'\n').then_some(false),
            State::Block { depth, prev } => {
                if *prev == b'/' && b == b'*' {
                    *depth += 1;
                    *prev = 0;
                    None
                } else if *prev == b'*' && b == b'/' {
                    *depth -= 1;
                    *prev = 0;
                    (*depth == 0).then_some(false)
                } else {
                    *prev = b;
                    None
                }
            }
            State::Single {
                escapes,
                after_quote,
                after_backslash,
            } => {
                if *after_quote {
                    if b == b'\'' {
                        *after_quote = false;
                        None
                    } else {
                        Some(true)
                    }
                } else {
                    if *after_backslash {
                        *after_backslash = false;
                    } else if *escapes && b == b'\\' {
                        *after_backslash = true;
                    } else if b == b'\'' {
                        *after_quote = true;
                    }
                    None
                }
            }
            State::Double { after_quote } => {
                if *after_quote {
                    if b == b'"' {
                        *after_quote = false;
                        None
                    } else {
                        Some(true)
                    }
                } else {
                    if b == b'"' {
                        *after_quote = true;
                    }
                    None
                }
            }
            State::Tag(tag) => {
                if b == b'$' {
                    let tag = std::mem::take(tag);
                    self.state = State::Dollar { tag, matched: 0 };
                    None
                } else if ident_char(b) && !(tag.is_empty() && b.is_ascii_digit()) {
                    tag.push(b);
                    None
                } else {
                    // `$1` or a lone `$`: not a dollar quote.
                    Some(true)
                }
            }
            State::Dollar { tag, matched } => {
                // The closing delimiter is `$tag$`.
                let len = tag.len() + 2;
                let want = if *matched == 0 || *matched == len - 1 {
                    b'$'
                } else {
                    tag[*matched - 1]
                };
                if b == want {
                    *matched += 1;
                    (*matched == len).then_some(false)
                } else {
                    *matched = usize::from(b == b'$');
                    None
                }
            }
        };
        if let Some(again) = back {
            self.back_to_normal();
            if again {
                self.normal(b);
            }
        }
    }

    fn back_to_normal(&mut self) {
        self.state = State::Normal;
        self.prev = 0;
        self.prev2 = 0;
    }

    fn normal(&mut self, b: u8) {
        let (prev, prev2) = (self.prev, self.prev2);
        self.prev2 = prev;
        self.prev = b;
        match b {
            b'-' if prev == b'-' => self.state = State::LineComment,
            b'*' if prev == b'/' => self.state = State::Block { depth: 1, prev: 0 },
            b'\'' => {
                self.state = State::Single {
                    escapes: matches!(prev, b'E' | b'e') && !ident_char(prev2),
                    after_quote: false,
                    after_backslash: false,
                }
            }
            b'"' => self.state = State::Double { after_quote: false },
            b'$' if !ident_char(prev) => self.state = State::Tag(Vec::new()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of `sql` that start outside strings and comments.
    fn tops(sql: &str) -> Vec<String> {
        let mut l = SqlLexer::new();
        let mut out = Vec::new();
        for line in sql.split_inclusive('\n') {
            l.feed(line.as_bytes());
            if l.line_began_at_top() {
                out.push(line.trim_end().to_owned());
            }
        }
        out
    }

    #[test]
    fn header_lookalikes_inside_strings_names_and_comments_are_not_at_top() {
        let sql = "COMMENT ON TABLE s.a IS 'x\nCOPY s.t (id) FROM stdin;\nit''s\n';\n\
                   SELECT E'a\\'\nCOPY s.t (id) FROM stdin;\n';\n\
                   CREATE TABLE \"we\"\"ird\nCOPY s.t (id) FROM stdin;\n\" (a int);\n\
                   SELECT $f$\nCOPY s.t (id) FROM stdin;\n$f$, $1;\n\
                   /* a /* nested\nCOPY s.t (id) FROM stdin;\n*/ still */\n\
                   -- a comment 'with a quote\n\
                   COPY s.t (id) FROM stdin;\n";
        assert_eq!(
            tops(sql),
            [
                "COMMENT ON TABLE s.a IS 'x",
                "SELECT E'a\\'",
                "CREATE TABLE \"we\"\"ird",
                "SELECT $f$",
                "/* a /* nested",
                "-- a comment 'with a quote",
                "COPY s.t (id) FROM stdin;",
            ]
        );
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_state() {
        let sql = "SELECT 'a''b', \"c\"\"d\", $x$e$x$, E'f\\'g' -- h\n/* i */ COPY\n";
        for n in 1..sql.len() {
            let mut l = SqlLexer::new();
            for part in sql.as_bytes().chunks(n) {
                l.feed(part);
            }
            assert_eq!(l.state, State::Normal, "chunks of {n}");
        }
    }
}
