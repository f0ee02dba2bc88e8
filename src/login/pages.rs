//! The pages the browser shows at the end of a sign-in. Plain HTML with no script and no
//! external resource; every text that came from a request is escaped.

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, heading: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}}</style>\
         </head><body><h1 id=\"heading\">{heading}</h1><p id=\"message\">{body}</p></body></html>\n",
        title = escape(title),
        heading = escape(heading),
        body = escape(body),
    )
}

pub(crate) fn success() -> String {
    page(
        "Signed in",
        "Signed in to ChatGPT",
        "You can close this window and return to your application.",
    )
}

pub(crate) fn error(message: &str) -> String {
    page("Sign-in failed", "Sign-in failed", message)
}

#[cfg(test)]
mod tests {
    #[test]
    fn issuer_text_cannot_inject_markup() {
        let html = super::error("<script>alert(1)</script>");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
