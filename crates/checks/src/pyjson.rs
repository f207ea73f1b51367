//! Whether Python's `json.loads(s)` would succeed, without building the value.
//!
//! IFEval's `detectable_format:json_format` passes when `json.loads` accepts the (fence-
//! stripped) response. Python's decoder is stricter than some parsers and looser than others:
//! it accepts `NaN`, `Infinity`, `-Infinity`, any top-level value, lone surrogate escapes and
//! unbounded nesting depth; it rejects a leading byte-order mark, control characters inside
//! strings, trailing commas, single quotes, comments and anything after the value except
//! JSON whitespace (space, tab, CR, LF). This recognizer copies those rules and works with an
//! explicit stack, so deep nesting cannot overflow ours.

#[derive(Clone, Copy)]
enum Frame {
    /// Inside an array: after `[` or `,` (expecting a value).
    Array,
    /// Inside an object: after `:` (expecting a value).
    Object,
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }
    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    /// A string starting at `"`.
    fn string(&mut self) -> bool {
        self.i += 1;
        loop {
            match self.peek() {
                None => return false,
                Some(b'"') => {
                    self.i += 1;
                    return true;
                }
                Some(c) if c < 0x20 => return false,
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            for _ in 0..4 {
                                if !self.peek().is_some_and(|h| h.is_ascii_hexdigit()) {
                                    return false;
                                }
                                self.i += 1;
                            }
                        }
                        _ => return false,
                    }
                }
                Some(_) => self.i += 1,
            }
        }
    }

    /// A number (the C scanner's rules: ASCII digits, optional fraction and exponent that are
    /// only taken when complete).
    fn number(&mut self) -> bool {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return false,
        }
        if self.peek() == Some(b'.') && matches!(self.b.get(self.i + 1), Some(b'0'..=b'9')) {
            self.i += 1;
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let save = self.i;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                self.i = save;
            }
        }
        true
    }
}

/// True when Python's `json.loads(s)` returns without raising.
pub fn loads_ok(s: &str) -> bool {
    if s.starts_with('\u{feff}') {
        return false;
    }
    let mut c = Cursor {
        b: s.as_bytes(),
        i: 0,
    };
    let mut stack: Vec<Frame> = Vec::new();
    c.ws();
    'value: loop {
        // Parse one value at c.i.
        match c.peek() {
            Some(b'"') => {
                if !c.string() {
                    return false;
                }
            }
            Some(b'{') => {
                c.i += 1;
                c.ws();
                if c.peek() == Some(b'}') {
                    c.i += 1;
                } else {
                    if !(c.peek() == Some(b'"') && c.string()) {
                        return false;
                    }
                    c.ws();
                    if !c.eat(b":") {
                        return false;
                    }
                    c.ws();
                    stack.push(Frame::Object);
                    continue 'value;
                }
            }
            Some(b'[') => {
                c.i += 1;
                c.ws();
                if c.peek() == Some(b']') {
                    c.i += 1;
                } else {
                    stack.push(Frame::Array);
                    continue 'value;
                }
            }
            Some(b'n') if c.eat(b"null") => {}
            Some(b't') if c.eat(b"true") => {}
            Some(b'f') if c.eat(b"false") => {}
            Some(b'N') if c.eat(b"NaN") => {}
            Some(b'I') if c.eat(b"Infinity") => {}
            Some(b'-') if c.eat(b"-Infinity") => {}
            Some(b'-' | b'0'..=b'9') => {
                if !c.number() {
                    return false;
                }
            }
            _ => return false,
        }
        // A value is complete: close containers or move to the next element.
        loop {
            match stack.last().copied() {
                None => {
                    c.ws();
                    return c.i == c.b.len();
                }
                Some(Frame::Array) => {
                    c.ws();
                    match c.peek() {
                        Some(b',') => {
                            c.i += 1;
                            c.ws();
                            continue 'value;
                        }
                        Some(b']') => {
                            c.i += 1;
                            stack.pop();
                        }
                        _ => return false,
                    }
                }
                Some(Frame::Object) => {
                    c.ws();
                    match c.peek() {
                        Some(b',') => {
                            c.i += 1;
                            c.ws();
                            if !(c.peek() == Some(b'"') && c.string()) {
                                return false;
                            }
                            c.ws();
                            if !c.eat(b":") {
                                return false;
                            }
                            c.ws();
                            continue 'value;
                        }
                        Some(b'}') => {
                            c.i += 1;
                            stack.pop();
                        }
                        _ => return false,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::loads_ok;

    #[test]
    fn accepts_what_python_accepts() {
        for s in [
            "{}",
            "[]",
            "0",
            "-0",
            "1.5e10",
            "1E+2",
            "\"x\"",
            "null",
            "true",
            "false",
            "NaN",
            "Infinity",
            "-Infinity",
            " {\"a\": [1, 2, {\"b\": null}]} \n",
            "[NaN, -Infinity]",
            "\"\\ud800\"",
            "\"\\u00e9 é 中\"",
            "{\"a\":1,\"a\":2}",
            "123456789012345678901234567890",
        ] {
            assert!(loads_ok(s), "{s}");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(loads_ok(&deep));
    }

    #[test]
    fn rejects_what_python_rejects() {
        for s in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "{'a':1}",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "nan",
            "inf",
            "\"a\nb\"",
            "\"\\x\"",
            "\"\\u12\"",
            "{} x",
            "[1] [2]",
            "\u{feff}{}",
            "// c\n{}",
            "\u{a0}{}",
            "{\"a\" 1}",
            "{1:2}",
            "-",
            "--1",
            "tru",
        ] {
            assert!(!loads_ok(s), "{s:?}");
        }
    }

    #[test]
    fn partial_exponent_is_extra_data() {
        // Python: json.loads("1e") -> Extra data; json.loads("1e5") -> 100000.0
        assert!(!loads_ok("1e+"));
        assert!(loads_ok("1e5"));
    }
}
