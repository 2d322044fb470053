//! JSON with comments (JSONC), as devcontainer.json allows: `//` and `/* */` comments and
//! trailing commas. They are blanked out in place (newlines kept), so serde_json's line and
//! column still point into the file the user wrote. Pure: no I/O.

use std::path::Path;

use crate::ui::UserError;

/// Parses JSONC text; an error names the file, line and column.
pub fn parse(path: &Path, text: &str) -> anyhow::Result<serde_json::Value> {
    let plain = strip(text).map_err(|(offset, what)| {
        let (line, col) = line_col(text, offset);
        UserError::with_hint(
            format!("{}:{line}:{col}: {what}", path.display()),
            "close the comment; devcontainer.json is JSON with `//` and `/* */` comments",
        )
    })?;
    serde_json::from_str(&plain).map_err(|e| {
        let msg = e.to_string();
        // serde_json appends " at line L column C"; the place goes in front instead.
        let msg = msg
            .rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m)
            .to_string();
        UserError::with_hint(
            format!("{}:{}:{}: {msg}", path.display(), e.line(), e.column()),
            "fix the JSON syntax at that place",
        )
    })
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The text with comments, a byte-order mark and trailing commas replaced by spaces; or the
/// offset of an unterminated block comment.
pub fn strip(text: &str) -> Result<String, (usize, &'static str)> {
    let mut out = text.as_bytes().to_vec();
    if out.starts_with("\u{feff}".as_bytes()) {
        out[..3].fill(b' ');
    }
    let n = out.len();
    let mut i = 0;
    let mut in_string = false;
    // Where the last comma outside a string is, while only blanks follow it.
    let mut comma: Option<usize> = None;
    while i < n {
        let c = out[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                in_string = true;
                comma = None;
            }
            b'/' if out.get(i + 1) == Some(&b'/') => {
                while i < n && out[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
                continue;
            }
            b'/' if out.get(i + 1) == Some(&b'*') => {
                let start = i;
                out[i] = b' ';
                out[i + 1] = b' ';
                i += 2;
                loop {
                    if i + 1 >= n {
                        return Err((start, "unterminated `/*` comment"));
                    }
                    if out[i] == b'*' && out[i + 1] == b'/' {
                        out[i] = b' ';
                        out[i + 1] = b' ';
                        i += 2;
                        break;
                    }
                    if !matches!(out[i], b'\n' | b'\r') {
                        out[i] = b' ';
                    }
                    i += 1;
                }
                continue;
            }
            // Two commas in a row: neither is trailing (serde_json names the place).
            b',' => comma = if comma.is_some() { None } else { Some(i) },
            b'}' | b']' => {
                if let Some(at) = comma.take() {
                    out[at] = b' ';
                }
            }
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => comma = None,
        }
        i += 1;
    }
    // Only ASCII bytes were replaced, each by a space, and never inside a multi-byte character
    // (comments end at ASCII bytes; a string's bytes are left alone).
    String::from_utf8(out).map_err(|_| (0, "the text is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> serde_json::Value {
        parse(Path::new("/p/devcontainer.json"), text).expect("parses")
    }

    fn error(text: &str) -> String {
        parse(Path::new("/p/devcontainer.json"), text)
            .expect_err("fails")
            .to_string()
    }

    #[test]
    fn comments_and_trailing_commas_are_read() {
        let v = value(
            "// top\n{\n  /* block\n  comment */ \"image\": \"debian\", // after\n  \"a\": [1, 2,],\n  \"b\": {\"c\": \"//not a comment\", \"d\": \"/* nor */\",},\n}",
        );
        assert_eq!(v["image"], "debian");
        assert_eq!(v["a"], serde_json::json!([1, 2]));
        assert_eq!(v["b"]["c"], "//not a comment");
        assert_eq!(v["b"]["d"], "/* nor */");
    }

    #[test]
    fn crlf_bom_escapes_and_no_final_newline() {
        let v = value("\u{feff}{\r\n  \"x\": \"a \\\" // b\", // c\r\n  \"y\": 1,\r\n}");
        assert_eq!(v["x"], "a \" // b");
        assert_eq!(v["y"], 1);
    }

    #[test]
    fn a_comma_before_a_comment_before_the_brace_is_trailing() {
        let v = value("{\"a\": 1, // last\n /* x */ }");
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn errors_have_file_line_and_column() {
        let e = error("{\n  \"image\": \"debian\"\n  \"x\": 1\n}");
        assert!(
            e.starts_with("/p/devcontainer.json:3:3: expected `,` or `}`"),
            "{e}"
        );
        let e = error("{\n  /* open\n}");
        assert_eq!(e, "/p/devcontainer.json:2:3: unterminated `/*` comment");
        // A comma that is not trailing stays, and is an error.
        let e = error("{\"a\": 1,, }");
        assert!(e.starts_with("/p/devcontainer.json:1:9:"), "{e}");
    }
}
