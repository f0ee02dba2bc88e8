//! Text a credential program wrote, made fit for an error message: anything that looks
//! like a secret is replaced, and the result is one bounded line. The rule is deliberately
//! broad (a long run of token characters, or the word after `bearer`, `token`, `key`,
//! `secret` or `password`): a lost word of diagnostics costs less than a leaked token.

/// What replaces a scrubbed word.
pub(crate) const REDACTED: &str = "[redacted]";
/// Most characters of scrubbed text kept.
const MAX_CHARS: usize = 1024;
/// A run of token characters at least this long is taken for a secret.
const LONG_RUN: usize = 16;

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=')
}

/// Words after which the next word is a value to hide, whatever its length.
fn names_a_secret(word: &str) -> bool {
    let w = word
        .trim_end_matches([':', '='])
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_ascii_lowercase();
    ["bearer", "token", "key", "secret", "password", "passwd"]
        .iter()
        .any(|s| w == *s || w.ends_with(&format!("_{s}")) || w.ends_with(&format!("-{s}")))
}

/// `text` with secret-looking words (and `known`, the output the program printed)
/// replaced, on one line, at most `MAX_CHARS` characters.
pub(crate) fn scrub(text: &str, known: Option<&str>) -> String {
    let mut text = text.to_owned();
    if let Some(k) = known.filter(|k| !k.is_empty()) {
        text = text.replace(k, REDACTED);
    }
    let mut out: Vec<String> = vec![];
    let mut hide_next = false;
    for word in text.split_whitespace() {
        let mut kept = String::new();
        // `key=value` hides the value; the name stays readable.
        let (name, value) = match word.split_once(['=', ':']) {
            Some((n, v)) if names_a_secret(n) && !v.is_empty() => (Some(n), v),
            _ => (None, word),
        };
        if let Some(n) = name {
            kept.push_str(n);
            kept.push('=');
        }
        let long =
            value.chars().filter(|c| token_char(*c)).count() >= LONG_RUN && has_long_run(value);
        if hide_next || name.is_some() || long {
            kept.push_str(REDACTED);
        } else {
            kept.push_str(value);
        }
        hide_next = name.is_none() && names_a_secret(word);
        out.push(kept);
    }
    let line = out.join(" ");
    if line.chars().count() <= MAX_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(MAX_CHARS).collect();
    cut.push('…');
    cut
}

fn has_long_run(word: &str) -> bool {
    let mut run = 0;
    for c in word.chars() {
        if token_char(c) {
            run += 1;
            if run >= LONG_RUN {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_words_are_replaced_and_the_rest_kept() {
        let s = scrub(
            "error: Bearer abc123 rejected\ntoken=xyz api_key: hunter2 eyJhbGciOiJIUzI1NiJ9.e30.sig",
            None,
        );
        assert_eq!(
            s,
            "error: Bearer [redacted] rejected token=[redacted] api_key: [redacted] [redacted]"
        );
        assert!(!s.contains("abc123") && !s.contains("xyz") && !s.contains("hunter2"));
    }

    #[test]
    fn the_known_output_goes_and_the_length_is_bounded() {
        let s = scrub("printed tk1 then failed", Some("tk1"));
        assert_eq!(s, "printed [redacted] then failed");
        let long = "word ".repeat(1000);
        assert!(scrub(&long, None).chars().count() <= MAX_CHARS + 1);
    }
}
