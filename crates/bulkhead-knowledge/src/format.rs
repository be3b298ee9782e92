//! Document formats and their conversion to plain text.
//!
//! Text and Markdown are kept as written (Markdown structure matters to the
//! chunker); only line endings are normalised. HTML is reduced to its
//! visible text by a small tolerant scanner rather than a full parser: the
//! goal is searchable text, not a faithful DOM, and no input can make it
//! fail. Script, style, head and template content is dropped, block
//! elements become line breaks, and the common entities are decoded after
//! tags are removed, so an escaped `&lt;script&gt;` stays text.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The format of an ingested document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocFormat {
    /// Plain text: paragraphs separated by blank lines.
    Text,
    /// Markdown (CommonMark-ish): ATX headings structure the chunks.
    Markdown,
    /// HTML: reduced to text; `h1`–`h6` structure the chunks.
    Html,
}

impl DocFormat {
    /// Parses the wire name (`text`, `markdown`, `html`); also accepts the
    /// common aliases and media types (`md`, `text/markdown`, `text/plain`,
    /// `text/html`, ...), case-insensitively, so the HTTP layer can pass a
    /// `Content-Type` essence straight through.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" | "txt" | "plain" | "text/plain" => Some(Self::Text),
            "markdown" | "md" | "text/markdown" | "text/x-markdown" => Some(Self::Markdown),
            "html" | "htm" | "text/html" | "application/xhtml+xml" => Some(Self::Html),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Markdown => "markdown",
            Self::Html => "html",
        }
    }
}

impl fmt::Display for DocFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The document as plain text (see the module docs). Never fails.
pub fn to_text(content: &str, format: DocFormat) -> String {
    let content = normalize_newlines(content);
    match format {
        DocFormat::Text | DocFormat::Markdown => content,
        DocFormat::Html => render(&html_blocks(&content)),
    }
}

/// `\r\n` and lone `\r` become `\n`.
pub(crate) fn normalize_newlines(s: &str) -> String {
    if s.contains('\r') {
        s.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        s.to_owned()
    }
}

/// A piece of an HTML document: a heading with its level, or body text
/// whose paragraphs are separated by blank lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Block {
    Heading(u8, String),
    Text(String),
}

fn render(blocks: &[Block]) -> String {
    let mut out = String::new();
    for block in blocks {
        let text = match block {
            Block::Heading(_, t) | Block::Text(t) => t,
        };
        if text.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(text);
    }
    out
}

/// Elements whose content is never visible text.
const DROPPED: &[&str] = &[
    "script", "style", "head", "template", "noscript", "svg", "iframe", "object",
];

/// Elements that end a paragraph (a blank line in the output).
const PARAGRAPH: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "nav",
    "aside",
    "main",
    "blockquote",
    "pre",
    "table",
    "ul",
    "ol",
    "dl",
    "hr",
    "figure",
    "figcaption",
    "form",
    "fieldset",
    "address",
    "details",
    "summary",
    "body",
    "html",
];

/// Elements that end a line.
const LINE: &[&str] = &["br", "li", "tr", "dt", "dd", "caption", "option"];

/// Elements that separate words (table cells).
const CELL: &[&str] = &["td", "th"];

/// Splits HTML into headings and body text (see the module docs).
pub(crate) fn html_blocks(html: &str) -> Vec<Block> {
    let mut scanner = Scanner::default();
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        let (text, after) = rest.split_at(lt);
        scanner.text(text);
        rest = scanner.markup(after);
    }
    scanner.text(rest);
    scanner.finish()
}

#[derive(Default)]
struct Scanner {
    blocks: Vec<Block>,
    /// Body text since the last heading, whitespace already collapsed.
    body: String,
    /// The open heading: its level and text so far.
    heading: Option<(u8, String)>,
    /// Depth of open `pre` elements, where whitespace is kept.
    pre: usize,
}

impl Scanner {
    fn out(&mut self) -> &mut String {
        match &mut self.heading {
            Some((_, text)) => text,
            None => &mut self.body,
        }
    }

    /// Appends text outside tags, decoding entities.
    fn text(&mut self, raw: &str) {
        let decoded = decode_entities(raw);
        let keep_whitespace = self.pre > 0 && self.heading.is_none();
        let out = self.out();
        for c in decoded.chars() {
            if c.is_whitespace() && !(keep_whitespace && (c == '\n' || c == ' ' || c == '\t')) {
                // Collapse runs and drop whitespace at the start of a line.
                if !(out.is_empty() || out.ends_with(' ') || out.ends_with('\n')) {
                    out.push(' ');
                }
            } else {
                out.push(c);
            }
        }
    }

    fn newline(&mut self, count: usize) {
        if self.heading.is_some() {
            self.text(" ");
            return;
        }
        let trimmed = self.body.trim_end_matches([' ', '\t']).len();
        self.body.truncate(trimmed);
        if self.body.is_empty() {
            return;
        }
        let have = self.body.len() - self.body.trim_end_matches('\n').len();
        for _ in have..count {
            self.body.push('\n');
        }
    }

    fn flush_body(&mut self) {
        let body = tidy(&self.body);
        if !body.is_empty() {
            self.blocks.push(Block::Text(body));
        }
        self.body.clear();
    }

    fn close_heading(&mut self) {
        if let Some((level, text)) = self.heading.take() {
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if !text.is_empty() {
                self.blocks.push(Block::Heading(level, text));
            }
        }
    }

    /// Handles markup starting at `s` (which starts with `<`) and returns
    /// what follows it.
    fn markup<'a>(&mut self, s: &'a str) -> &'a str {
        let after_lt = s.get(1..).unwrap_or("");
        if let Some(comment) = after_lt.strip_prefix("!--") {
            return comment
                .find("-->")
                .map_or("", |i| comment.get(i + 3..).unwrap_or(""));
        }
        let (closing, name_start) = match after_lt.strip_prefix('/') {
            Some(r) => (true, r),
            None => (false, after_lt),
        };
        let starts_tag = name_start
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic());
        if !starts_tag {
            if after_lt.starts_with('!') || after_lt.starts_with('?') {
                // Doctype or processing instruction.
                return after_lt
                    .find('>')
                    .map_or("", |i| after_lt.get(i + 1..).unwrap_or(""));
            }
            // A lone `<` in text, as browsers treat it.
            self.text("<");
            return after_lt;
        }
        let name_len = name_start
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(name_start.len());
        let name = name_start
            .get(..name_len)
            .unwrap_or("")
            .to_ascii_lowercase();
        let rest = name_start.get(name_len..).unwrap_or("");
        let Some(end) = tag_end(rest) else {
            return ""; // An unterminated tag runs to the end of the input.
        };
        let self_closing = rest.get(..end).is_some_and(|t| t.trim_end().ends_with('/'));
        let rest = rest.get(end + 1..).unwrap_or("");
        if !closing && !self_closing && DROPPED.contains(&name.as_str()) {
            return skip_element(rest, &name);
        }
        self.element(&name, closing);
        rest
    }

    fn element(&mut self, name: &str, closing: bool) {
        let heading_level = match name.as_bytes() {
            [b'h', d @ b'1'..=b'6'] => Some(d - b'0'),
            _ => None,
        };
        if let Some(level) = heading_level {
            if closing {
                self.close_heading();
            } else {
                self.close_heading();
                self.flush_body();
                self.heading = Some((level, String::new()));
            }
        } else if name == "pre" {
            self.newline(2);
            self.pre = if closing {
                self.pre.saturating_sub(1)
            } else {
                self.pre.saturating_add(1)
            };
        } else if PARAGRAPH.contains(&name) {
            self.newline(2);
        } else if LINE.contains(&name) {
            self.newline(1);
        } else if CELL.contains(&name) {
            self.text(" ");
        }
    }

    fn finish(mut self) -> Vec<Block> {
        self.close_heading();
        self.flush_body();
        self.blocks
    }
}

/// Index of the `>` ending a tag, skipping quoted attribute values.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '>' => return Some(i),
            None => {}
        }
    }
    None
}

/// Skips to after `</name ...>`, or to the end if it is never closed.
fn skip_element<'a>(s: &'a str, name: &str) -> &'a str {
    // Compare in place rather than lower-casing the rest of the document,
    // which would make many small `<script>` elements quadratic.
    let mut from = 0;
    while let Some(found) = s.get(from..).and_then(|r| r.find("</")) {
        let name_at = from + found + 2;
        let end = name_at + name.len();
        let same_name = s
            .get(name_at..end)
            .is_some_and(|n| n.eq_ignore_ascii_case(name));
        let next = s.get(end..).and_then(|r| r.chars().next());
        if same_name && next.is_none_or(|c| !c.is_ascii_alphanumeric()) {
            let tail = s.get(end..).unwrap_or("");
            return tail
                .find('>')
                .map_or("", |i| tail.get(i + 1..).unwrap_or(""));
        }
        from = name_at;
    }
    ""
}

/// Trims every line's end and the whole text, and keeps at most one blank
/// line in a row.
fn tidy(s: &str) -> String {
    let mut out = String::new();
    let mut blank = 0;
    for line in s.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

/// Decodes `&amp; &lt; &gt; &quot; &#39; &apos; &nbsp;` and numeric
/// references; anything else is left as written. `&nbsp;` becomes a plain
/// space so that it separates words for search.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or(""));
        let tail = rest.get(amp..).unwrap_or("");
        // Entity names are short; bounding the search keeps this linear.
        let semi = tail
            .char_indices()
            .take(12)
            .find(|(_, c)| *c == ';')
            .map(|(i, _)| i);
        let decoded = semi.and_then(|i| tail.get(1..i)).and_then(entity);
        match (decoded, semi) {
            (Some(c), Some(i)) => {
                out.push(c);
                rest = tail.get(i + 1..).unwrap_or("");
            }
            _ => {
                out.push('&');
                rest = tail.get(1..).unwrap_or("");
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => {
            let digits = name.strip_prefix('#')?;
            let code = match digits.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => digits.parse().ok()?,
            };
            // NUL and the other controls (except whitespace) would only
            // smuggle invisible characters into search text.
            char::from_u32(code).filter(|c| !c.is_control() || c.is_whitespace())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names() {
        for (s, f) in [
            ("text", DocFormat::Text),
            ("markdown", DocFormat::Markdown),
            ("html", DocFormat::Html),
            ("MD", DocFormat::Markdown),
            ("text/html", DocFormat::Html),
            ("text/plain", DocFormat::Text),
            (" Markdown ", DocFormat::Markdown),
        ] {
            assert_eq!(DocFormat::parse(s), Some(f), "{s}");
        }
        for s in ["", "pdf", "text/csv", "htmlx"] {
            assert_eq!(DocFormat::parse(s), None, "{s}");
        }
        for f in [DocFormat::Text, DocFormat::Markdown, DocFormat::Html] {
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{f}\""));
            assert_eq!(serde_json::from_str::<DocFormat>(&json).unwrap(), f);
            assert_eq!(DocFormat::parse(f.as_str()), Some(f));
        }
        assert!(serde_json::from_str::<DocFormat>("\"md\"").is_err());
    }

    #[test]
    fn text_and_markdown_keep_content_but_normalise_newlines() {
        let md = "# Title\r\n\r\nSome *text* &amp; <b>tags</b>\r\nend\rlast";
        let want = "# Title\n\nSome *text* &amp; <b>tags</b>\nend\nlast";
        assert_eq!(to_text(md, DocFormat::Markdown), want);
        assert_eq!(to_text(md, DocFormat::Text), want);
    }

    #[test]
    fn html_drops_script_style_head_and_comments() {
        let html = r#"<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style></head>
<body><script type="text/javascript">alert("x</p>")</script><p>Hello <b>world</b></p>
<!-- hidden --><SCRIPT>evil()</SCRIPT ><noscript>no</noscript><p>Bye</p></body></html>"#;
        assert_eq!(to_text(html, DocFormat::Html), "Hello world\n\nBye");
    }

    #[test]
    fn html_unclosed_script_drops_the_rest() {
        assert_eq!(to_text("<p>a</p><script>b c d", DocFormat::Html), "a");
        assert_eq!(to_text("<p>a</p><!-- b c d", DocFormat::Html), "a");
        assert_eq!(to_text("a <b unterminated", DocFormat::Html), "a");
    }

    #[test]
    fn html_block_tags_become_newlines() {
        let html = "<div>one</div><div>two<br>three</div><ul><li>a</li><li>b</li></ul>\
                    <table><tr><td>x</td><td>y</td></tr></table>";
        assert_eq!(
            to_text(html, DocFormat::Html),
            "one\n\ntwo\nthree\n\na\nb\n\nx y"
        );
    }

    #[test]
    fn html_collapses_whitespace_except_in_pre() {
        let html = "<p>  lots   of\n\n   space  </p><pre>fn main() {\n    x();\n}</pre>";
        assert_eq!(
            to_text(html, DocFormat::Html),
            "lots of space\n\nfn main() {\n    x();\n}"
        );
    }

    #[test]
    fn html_entities() {
        let html = "<p>a &amp; b &lt;c&gt; &quot;q&quot; &#39;s&#39; x&nbsp;y &#233; &#xE9; &#X1F642; \
                    &unknown; &amp &#xZZ; &#0; AT&T</p>";
        assert_eq!(
            to_text(html, DocFormat::Html),
            "a & b <c> \"q\" 's' x y é é 🙂 &unknown; &amp &#xZZ; &#0; AT&T"
        );
    }

    #[test]
    fn escaped_markup_stays_text() {
        assert_eq!(
            to_text(
                "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>",
                DocFormat::Html
            ),
            "<script>alert(1)</script>"
        );
        assert_eq!(
            to_text("1 < 2 and 3 > 2", DocFormat::Html),
            "1 < 2 and 3 > 2"
        );
    }

    #[test]
    fn html_attributes_with_angle_brackets() {
        assert_eq!(
            to_text(
                r#"<a title="x > y" href='z'>link</a> text"#,
                DocFormat::Html
            ),
            "link text"
        );
    }

    #[test]
    fn html_headings_become_blocks() {
        let blocks =
            html_blocks("<h1>Guide</h1><p>intro</p><h2>In<em>stall</em></h2>steps<h3></h3>");
        assert_eq!(
            blocks,
            [
                Block::Heading(1, "Guide".into()),
                Block::Text("intro".into()),
                Block::Heading(2, "Install".into()),
                Block::Text("steps".into()),
            ]
        );
        assert_eq!(
            to_text("<h1>Guide</h1><p>intro</p>", DocFormat::Html),
            "Guide\n\nintro"
        );
    }

    #[test]
    fn many_dropped_elements_stay_fast() {
        // Quadratic scanning would take minutes here.
        let html = "<script>x()</script><p>a</p>".repeat(100_000);
        let text = to_text(&html, DocFormat::Html);
        assert_eq!(text.len(), "a\n\n".len() * 100_000 - 2);
        assert_eq!(
            to_text("<script>a</scriptx>b</SCRIPT>c", DocFormat::Html),
            "c"
        );
    }

    #[test]
    fn html_unicode() {
        assert_eq!(
            to_text("<p>Grüße, 世界 🙂</p><p>ünïcödé</p>", DocFormat::Html),
            "Grüße, 世界 🙂\n\nünïcödé"
        );
    }
}
