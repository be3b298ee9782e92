//! Splitting a document into section-aware, overlapping chunks.
//!
//! A chunk is what gets embedded and returned by search, so it should be
//! about one topic and fit an embedding model's window:
//!
//! 1. The document is converted with [`to_text`] (HTML keeps its `h1`–`h6`
//!    as headings) and split into sections: Markdown by ATX headings outside
//!    fenced code blocks, HTML by heading elements, plain text is one
//!    section. Each chunk carries its section's heading path
//!    (`"Guide > Install"`); the heading line itself is not repeated in the
//!    chunk text. Text is never merged across sections.
//! 2. A section is cut into pieces no larger than `chunk_tokens -
//!    overlap_tokens`: whole paragraphs (blank-line separated; a fenced
//!    code block counts as one paragraph) where they fit, otherwise
//!    sentences, otherwise words, and a word longer than that (a hash, a
//!    URL, unspaced text) is cut between characters.
//! 3. Pieces are packed greedily into chunks of at most `chunk_tokens`
//!    (by [`estimate_tokens`]). Each chunk after the first of a section
//!    starts with the previous chunk's last whole words, at most
//!    `overlap_tokens` of them, so a sentence cut at a boundary is still
//!    found with its context. Original whitespace between pieces is kept,
//!    so code blocks keep their lines.
//!
//! The output is deterministic: the same input and limits give the same
//! chunks, which lets the store skip re-embedding unchanged documents.

use serde::{Deserialize, Serialize};

use crate::format::{Block, html_blocks, normalize_newlines};
use crate::{DocFormat, KnowledgeError, estimate_tokens, to_text};

/// Size limits of ingestion and chunking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest raw document accepted, in bytes. 2 MiB is a long book
    /// chapter or a large manual page; it bounds the memory and embedding
    /// cost of one ingestion request.
    pub max_document_bytes: usize,
    /// Largest chunk, in estimated tokens. 400 stays within the 512-token
    /// window of small embedding models, with room for the heuristic's
    /// error, and is small enough for precise retrieval.
    pub chunk_tokens: usize,
    /// Tokens of a chunk's tail repeated at the start of the next one in the
    /// same section: 60 (15 %) keeps a cut sentence's context without
    /// inflating the index much. Must be less than `chunk_tokens`.
    pub overlap_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_document_bytes: 2 * 1024 * 1024,
            chunk_tokens: 400,
            overlap_tokens: 60,
        }
    }
}

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Position in the document, from 0, without gaps.
    pub seq: u32,
    /// The chunk's text: trimmed, never empty.
    pub text: String,
    /// The heading path of the chunk's section (`"Guide > Install"`), or
    /// `None` before the first heading and in plain text.
    pub heading: Option<String>,
    /// [`estimate_tokens`] of `text`; at most `Limits::chunk_tokens`.
    pub tokens: u32,
}

/// Splits a document into chunks (see the module docs).
///
/// Errors: [`KnowledgeError::TooLarge`] if the raw `content` exceeds
/// `max_document_bytes`; [`KnowledgeError::Empty`] if it has no text (or,
/// in Markdown, only headings); [`KnowledgeError::InvalidLimits`] if
/// `chunk_tokens` is 0 or `overlap_tokens >= chunk_tokens`.
pub fn chunk(
    content: &str,
    format: DocFormat,
    limits: &Limits,
) -> Result<Vec<Chunk>, KnowledgeError> {
    if content.len() > limits.max_document_bytes {
        return Err(KnowledgeError::TooLarge {
            bytes: content.len(),
            limit: limits.max_document_bytes,
        });
    }
    if limits.chunk_tokens == 0 {
        return Err(KnowledgeError::InvalidLimits(
            "chunk_tokens must be at least 1".into(),
        ));
    }
    if limits.overlap_tokens >= limits.chunk_tokens {
        return Err(KnowledgeError::InvalidLimits(
            "overlap_tokens must be less than chunk_tokens".into(),
        ));
    }
    let sections = match format {
        DocFormat::Markdown => markdown_sections(&normalize_newlines(content)),
        DocFormat::Text => vec![Section {
            heading: None,
            paragraphs: paragraphs(&to_text(content, format)),
        }],
        DocFormat::Html => html_sections(&normalize_newlines(content)),
    };
    let mut chunks = Vec::new();
    let mut seq: u32 = 0;
    for section in &sections {
        for text in pack(&section.pieces(limits), limits) {
            chunks.push(Chunk {
                seq,
                tokens: estimate_tokens(&text),
                text,
                heading: section.heading.clone(),
            });
            // Over 4 billion chunks cannot fit in memory anyway; refuse
            // rather than repeat a sequence number.
            seq = seq.checked_add(1).ok_or(KnowledgeError::TooLarge {
                bytes: content.len(),
                limit: limits.max_document_bytes,
            })?;
        }
    }
    if chunks.is_empty() {
        return Err(KnowledgeError::Empty);
    }
    Ok(chunks)
}

/// A run of text under one heading path.
#[derive(Debug)]
struct Section {
    heading: Option<String>,
    /// Trimmed, non-empty paragraphs.
    paragraphs: Vec<String>,
}

/// A unit of packing: `sep` is the original whitespace before `text`
/// (`"\n\n"` between paragraphs, `""` inside a word cut in pieces).
#[derive(Debug)]
struct Piece<'a> {
    sep: &'a str,
    text: &'a str,
    tokens: usize,
}

impl Section {
    fn pieces(&self, limits: &Limits) -> Vec<Piece<'_>> {
        // Every piece must fit after a full overlap, so packing always makes
        // progress; `chunk` checked that this is at least 1.
        let max = limits
            .chunk_tokens
            .saturating_sub(limits.overlap_tokens)
            .max(1);
        let mut out = Vec::new();
        for paragraph in &self.paragraphs {
            split_paragraph(paragraph, max, &mut out);
        }
        out
    }
}

/// The heading path, e.g. `"Guide > Install"`, skipping empty headings.
struct HeadingPath(Vec<(u8, String)>);

impl HeadingPath {
    fn enter(&mut self, level: u8, title: String) {
        while self.0.last().is_some_and(|(l, _)| *l >= level) {
            self.0.pop();
        }
        self.0.push((level, title));
    }

    fn render(&self) -> Option<String> {
        let parts: Vec<&str> = self
            .0
            .iter()
            .map(|(_, t)| t.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" > "))
    }
}

/// Collects lines into paragraphs and paragraphs into sections.
struct SectionBuilder {
    sections: Vec<Section>,
    current: Section,
    paragraph: String,
}

impl SectionBuilder {
    fn new() -> Self {
        Self {
            sections: Vec::new(),
            current: Section {
                heading: None,
                paragraphs: Vec::new(),
            },
            paragraph: String::new(),
        }
    }

    fn line(&mut self, line: &str) {
        if !self.paragraph.is_empty() {
            self.paragraph.push('\n');
        }
        self.paragraph.push_str(line);
    }

    fn end_paragraph(&mut self) {
        let text = self.paragraph.trim();
        if !text.is_empty() {
            self.current.paragraphs.push(text.to_owned());
        }
        self.paragraph.clear();
    }

    fn start_section(&mut self, heading: Option<String>) {
        self.end_paragraph();
        let previous = std::mem::replace(
            &mut self.current,
            Section {
                heading,
                paragraphs: Vec::new(),
            },
        );
        if !previous.paragraphs.is_empty() {
            self.sections.push(previous);
        }
    }

    fn finish(mut self) -> Vec<Section> {
        self.start_section(None);
        self.sections
    }
}

fn markdown_sections(text: &str) -> Vec<Section> {
    let mut builder = SectionBuilder::new();
    let mut path = HeadingPath(Vec::new());
    let mut fence: Option<(char, usize)> = None;
    for line in text.lines() {
        if let Some((ch, len)) = fence {
            // Blank lines and `#` lines inside a fence are code.
            builder.line(line);
            if closes_fence(line, ch, len) {
                fence = None;
            }
        } else if let Some(open) = opens_fence(line) {
            fence = Some(open);
            builder.line(line);
        } else if let Some((level, title)) = atx_heading(line) {
            path.enter(level, title);
            builder.start_section(path.render());
        } else if line.trim().is_empty() {
            builder.end_paragraph();
        } else {
            builder.line(line);
        }
    }
    builder.finish()
}

fn html_sections(html: &str) -> Vec<Section> {
    let mut builder = SectionBuilder::new();
    let mut path = HeadingPath(Vec::new());
    for block in html_blocks(html) {
        match block {
            Block::Heading(level, title) => {
                path.enter(level, title);
                builder.start_section(path.render());
            }
            Block::Text(text) => {
                builder.current.paragraphs.extend(paragraphs(&text));
            }
        }
    }
    builder.finish()
}

/// Blank-line separated paragraphs, trimmed.
fn paragraphs(text: &str) -> Vec<String> {
    let mut builder = SectionBuilder::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            builder.end_paragraph();
        } else {
            builder.line(line);
        }
    }
    builder.end_paragraph();
    builder.current.paragraphs
}

/// The line without up to 3 spaces of indentation; `None` if indented more
/// (an indented code line in Markdown).
fn unindent(line: &str) -> Option<&str> {
    let rest = line.trim_start_matches(' ');
    (line.len() - rest.len() <= 3).then_some(rest)
}

/// A fence opening: at least three backticks or tildes.
fn opens_fence(line: &str) -> Option<(char, usize)> {
    let rest = unindent(line)?;
    let ch = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = rest.chars().take_while(|c| *c == ch).count();
    let info = rest.get(len..).unwrap_or("");
    // CommonMark: a backtick fence's info string has no backtick (else it
    // is inline code).
    (len >= 3 && !(ch == '`' && info.contains('`'))).then_some((ch, len))
}

/// A fence closing: the same character, at least as many, nothing after.
fn closes_fence(line: &str, ch: char, len: usize) -> bool {
    unindent(line).is_some_and(|rest| {
        let run = rest.chars().take_while(|c| *c == ch).count();
        run >= len && rest.get(run..).is_some_and(|r| r.trim().is_empty())
    })
}

/// An ATX heading: 1–6 `#`, then a space, a tab or the end of the line;
/// an optional closing run of `#` is not part of the title.
fn atx_heading(line: &str) -> Option<(u8, String)> {
    let rest = unindent(line)?;
    let level = rest.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let after = rest.get(level..)?;
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None; // `#hashtag` is text.
    }
    let title = after.trim();
    let stripped = title.trim_end_matches('#');
    let title = if stripped.is_empty() {
        ""
    } else if stripped.ends_with([' ', '\t']) {
        stripped.trim_end()
    } else {
        title
    };
    Some((u8::try_from(level).ok()?, title.to_owned()))
}

fn tokens(text: &str) -> usize {
    usize::try_from(estimate_tokens(text)).unwrap_or(usize::MAX)
}

/// Pushes the paragraph as one piece if it fits in `max` tokens, else its
/// sentences, words or character runs.
fn split_paragraph<'a>(paragraph: &'a str, max: usize, out: &mut Vec<Piece<'a>>) {
    let sep = if out.is_empty() { "" } else { "\n\n" };
    let t = tokens(paragraph);
    if t <= max {
        out.push(Piece {
            sep,
            text: paragraph,
            tokens: t,
        });
        return;
    }
    for (i, (sentence_sep, sentence)) in sentences(paragraph).into_iter().enumerate() {
        let sentence_sep = if i == 0 { sep } else { sentence_sep };
        let t = tokens(sentence);
        if t <= max {
            out.push(Piece {
                sep: sentence_sep,
                text: sentence,
                tokens: t,
            });
            continue;
        }
        for (j, (word_sep, word)) in words(sentence).into_iter().enumerate() {
            let word_sep = if j == 0 { sentence_sep } else { word_sep };
            let t = tokens(word);
            if t <= max {
                out.push(Piece {
                    sep: word_sep,
                    text: word,
                    tokens: t,
                });
                continue;
            }
            // No character costs more than one token, so `max` characters
            // cost at most `max` tokens.
            let mut first = true;
            let mut start = 0;
            let mut count = 0;
            for (k, _) in word.char_indices() {
                if count == max {
                    push_part(out, word, start, k, &mut first, word_sep);
                    start = k;
                    count = 0;
                }
                count += 1;
            }
            push_part(out, word, start, word.len(), &mut first, word_sep);
        }
    }
}

fn push_part<'a>(
    out: &mut Vec<Piece<'a>>,
    word: &'a str,
    start: usize,
    end: usize,
    first: &mut bool,
    word_sep: &'a str,
) {
    if let Some(text) = word.get(start..end).filter(|t| !t.is_empty()) {
        out.push(Piece {
            sep: if *first { word_sep } else { "" },
            text,
            tokens: tokens(text),
        });
        *first = false;
    }
}

/// Closing punctuation that stays with the sentence before it.
const CLOSERS: &[char] = &['"', '\'', ')', ']', '”', '’', '»', '）', '」', '』'];

/// Sentences with the whitespace before each. A sentence ends after `.`,
/// `!`, `?` or `…` (plus closing quotes or brackets) followed by
/// whitespace, or after `。`, `！`, `？`, which need no space.
fn sentences(text: &str) -> Vec<(&str, &str)> {
    let mut cuts = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let wide = matches!(c, '。' | '！' | '？');
        if !(wide || matches!(c, '.' | '!' | '?' | '…')) {
            continue;
        }
        let mut end = i + c.len_utf8();
        while let Some(&(j, d)) = chars.peek() {
            if !CLOSERS.contains(&d) {
                break;
            }
            end = j + d.len_utf8();
            chars.next();
        }
        if wide || chars.peek().is_none_or(|(_, d)| d.is_whitespace()) {
            cuts.push(end);
        }
    }
    cuts.push(text.len());
    let mut out = Vec::new();
    let mut prev = 0;
    for cut in cuts {
        let segment = text.get(prev..cut).unwrap_or("");
        prev = cut;
        let body = segment.trim_start();
        let sep = segment.get(..segment.len() - body.len()).unwrap_or("");
        let body = body.trim_end();
        if !body.is_empty() {
            out.push((sep, body));
        }
    }
    out
}

/// Byte spans of the whitespace-separated words.
fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

/// Words with the whitespace before each.
fn words(text: &str) -> Vec<(&str, &str)> {
    let mut prev = 0;
    word_spans(text)
        .into_iter()
        .map(|(s, e)| {
            let sep = text.get(prev..s).unwrap_or("");
            prev = e;
            (sep, text.get(s..e).unwrap_or(""))
        })
        .collect()
}

/// The longest run of whole final words of `text` costing at most `budget`.
fn overlap_tail(text: &str, budget: usize) -> &str {
    let mut start = text.len();
    let mut used = 0;
    for (s, e) in word_spans(text).into_iter().rev() {
        let t = tokens(text.get(s..e).unwrap_or(""));
        if used + t > budget {
            break;
        }
        used += t;
        start = s;
    }
    text.get(start..).unwrap_or("")
}

/// Greedy packing of a section's pieces into chunk texts (module docs).
fn pack(pieces: &[Piece<'_>], limits: &Limits) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    // An upper bound of `estimate_tokens(&current)`: token costs add up
    // across whitespace and only shrink when glued (see `tokens`).
    let mut current_tokens = 0;
    for (i, piece) in pieces.iter().enumerate() {
        // The current chunk always holds at least one new piece here (or
        // this is the first), so closing it makes progress.
        if i > 0 && current_tokens + piece.tokens > limits.chunk_tokens {
            let text = current.trim().to_owned();
            let tail = overlap_tail(&text, limits.overlap_tokens);
            current = tail.to_owned();
            current_tokens = tokens(tail);
            out.push(text);
        }
        if !current.is_empty() {
            current.push_str(piece.sep);
        }
        current.push_str(piece.text);
        current_tokens += piece.tokens;
    }
    out.push(current.trim().to_owned());
    out.retain(|t| !t.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(chunk_tokens: usize, overlap_tokens: usize) -> Limits {
        Limits {
            chunk_tokens,
            overlap_tokens,
            ..Limits::default()
        }
    }

    fn md(content: &str) -> Vec<Chunk> {
        chunk(content, DocFormat::Markdown, &Limits::default()).unwrap()
    }

    fn headings(chunks: &[Chunk]) -> Vec<Option<&str>> {
        chunks.iter().map(|c| c.heading.as_deref()).collect()
    }

    /// Checks the invariants every chunk list must satisfy.
    fn check(chunks: &[Chunk], limits: &Limits) {
        assert!(!chunks.is_empty());
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.seq as usize, i);
            assert!(!c.text.is_empty());
            assert_eq!(c.text, c.text.trim());
            assert_eq!(c.tokens, estimate_tokens(&c.text));
            assert!(
                c.tokens as usize <= limits.chunk_tokens,
                "{} > limit: {:?}",
                c.tokens,
                c.text
            );
        }
    }

    /// The overlap of `next` with `prev`: the longest word-boundary suffix
    /// of `prev` that `next` starts with, followed by whitespace.
    fn overlap<'a>(prev: &'a str, next: &str) -> &'a str {
        word_spans(prev)
            .into_iter()
            .map(|(s, _)| &prev[s..])
            .find(|suffix| {
                next.strip_prefix(suffix)
                    .is_some_and(|rest| rest.starts_with(char::is_whitespace))
            })
            .unwrap_or("")
    }

    #[test]
    fn default_limits() {
        let l = Limits::default();
        assert_eq!(
            (l.max_document_bytes, l.chunk_tokens, l.overlap_tokens),
            (2 * 1024 * 1024, 400, 60)
        );
        let parsed: Limits = serde_json::from_str(r#"{"chunk_tokens": 100}"#).unwrap();
        assert_eq!(parsed, limits(100, 60));
        assert!(serde_json::from_str::<Limits>(r#"{"chunk_token": 1}"#).is_err());
    }

    #[test]
    fn heading_paths() {
        let doc = "Preamble.\n\n# Guide\nIntro.\n## Install\nSteps.\n### Linux\napt.\n\
                   ## Use ##\nRun it.\n# Other #\nMore.\n#### Deep\nSkipped levels.";
        let chunks = md(doc);
        assert_eq!(
            headings(&chunks),
            [
                None,
                Some("Guide"),
                Some("Guide > Install"),
                Some("Guide > Install > Linux"),
                Some("Guide > Use"),
                Some("Other"),
                Some("Other > Deep"),
            ]
        );
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Preamble.",
                "Intro.",
                "Steps.",
                "apt.",
                "Run it.",
                "More.",
                "Skipped levels."
            ]
        );
        check(&chunks, &Limits::default());
    }

    #[test]
    fn heading_syntax() {
        let doc = "#hashtag is text\n\n####### seven is text\n\n    # indented code\n\n   ### Three spaces\nbody\n##\nan empty heading closes deeper sections\n## C# #\nsharp";
        let chunks = md(doc);
        assert_eq!(
            chunks[0].text,
            "#hashtag is text\n\n####### seven is text\n\n# indented code"
        );
        assert_eq!(
            headings(&chunks),
            [None, Some("Three spaces"), None, Some("C#")]
        );
    }

    #[test]
    fn sections_are_never_merged() {
        let chunks = md("# A\none\n# B\ntwo\n## C\n\n# D\nthree");
        assert_eq!(chunks.len(), 3, "a heading without body gives no chunk");
        assert_eq!(headings(&chunks), [Some("A"), Some("B"), Some("D")]);
    }

    #[test]
    fn code_fences_hide_headings() {
        let doc = "# Setup\nRun:\n\n```bash\n# install deps\n\napt install x\n## not a heading\n```\n\n\
                   ~~~~\n# also code\n~~~\n# still code\n~~~~\nafter fences\n# Next\ntail";
        let chunks = md(doc);
        assert_eq!(headings(&chunks), [Some("Setup"), Some("Next")]);
        let setup = &chunks[0].text;
        for line in [
            "# install deps",
            "\n\napt install x",
            "## not a heading",
            "# also code",
            "# still code",
            "after fences",
        ] {
            assert!(setup.contains(line), "{line:?} missing from {setup:?}");
        }
        // An unclosed fence runs to the end: nothing after it is a heading.
        let chunks = md("# A\n```\n# B\n");
        assert_eq!(headings(&chunks), [Some("A")]);
        // Inline code with backticks in the info string is not a fence.
        let chunks = md("``` `inline` ```\n# Real");
        assert_eq!(chunks.len(), 1);
        assert_eq!(headings(&chunks), [None]);
    }

    #[test]
    fn paragraphs_are_kept_whole_when_they_fit() {
        let para = |w: &str| vec![w; 40].join(" ");
        let doc = format!("{}\n\n{}\n\n{}", para("alpha"), para("beta"), para("gamma"));
        let l = limits(100, 0);
        let chunks = chunk(&doc, DocFormat::Text, &l).unwrap();
        check(&chunks, &l);
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            chunks[0].text,
            format!("{}\n\n{}", para("alpha"), para("beta"))
        );
        assert_eq!(chunks[1].text, para("gamma"));
    }

    #[test]
    fn long_paragraphs_split_at_sentences() {
        let doc = (0..60)
            .map(|i| format!("Sentence number {i} says something useful."))
            .collect::<Vec<_>>()
            .join(" ");
        let l = limits(50, 0);
        let chunks = chunk(&doc, DocFormat::Text, &l).unwrap();
        check(&chunks, &l);
        assert!(chunks.len() > 5);
        for c in &chunks {
            assert!(
                c.text.starts_with("Sentence") && c.text.ends_with("useful."),
                "{:?}",
                c.text
            );
        }
        let rejoined = chunks
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(rejoined, doc);
    }

    #[test]
    fn overlap_present_and_bounded() {
        let doc = (0..200)
            .map(|i| format!("Fact {i} is stated here."))
            .collect::<Vec<_>>()
            .join(" ");
        let doc = format!("# Facts\n{doc}\n# End\nshort");
        let l = limits(60, 12);
        let chunks = chunk(&doc, DocFormat::Markdown, &l).unwrap();
        check(&chunks, &l);
        let facts: Vec<&Chunk> = chunks
            .iter()
            .filter(|c| c.heading.as_deref() == Some("Facts"))
            .collect();
        assert!(facts.len() > 3);
        let mut words: Vec<&str> = facts[0].text.split_whitespace().collect();
        for pair in facts.windows(2) {
            let shared = overlap(&pair[0].text, &pair[1].text);
            assert!(
                !shared.is_empty(),
                "no overlap between {:?} and {:?}",
                pair[0].text,
                pair[1].text
            );
            assert!(
                estimate_tokens(shared) as usize <= l.overlap_tokens,
                "{shared:?}"
            );
            // Greedy: one more word would have exceeded the budget.
            let before = pair[0].text[..pair[0].text.len() - shared.len()].trim_end();
            let extra = before.split_whitespace().last().unwrap();
            assert!(estimate_tokens(&format!("{extra} {shared}")) as usize > l.overlap_tokens);
            words.extend(pair[1].text[shared.len()..].split_whitespace());
        }
        // Without the overlaps, the chunks are the section, in order.
        let body: Vec<&str> = doc.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(words, body);
        // No overlap across sections.
        assert_eq!(chunks.last().unwrap().text, "short");
    }

    #[test]
    fn zero_overlap_repeats_nothing() {
        let doc = vec!["word"; 500].join(" ");
        let l = limits(40, 0);
        let chunks = chunk(&doc, DocFormat::Text, &l).unwrap();
        check(&chunks, &l);
        let total: usize = chunks
            .iter()
            .map(|c| c.text.split_whitespace().count())
            .sum();
        assert_eq!(total, 500);
    }

    #[test]
    fn huge_single_paragraph() {
        // No sentence ends: split at words.
        let doc = vec!["lorem ipsum dolor"; 20_000].join(" ");
        let l = Limits::default();
        let chunks = chunk(&doc, DocFormat::Text, &l).unwrap();
        check(&chunks, &l);
        assert!(chunks.len() > 100);
        // Chunks are well filled: at least half the budget except the last.
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.tokens as usize > l.chunk_tokens / 2, "{}", c.tokens);
        }
    }

    #[test]
    fn huge_single_word_is_cut_between_characters() {
        let word = "ab".repeat(50_000);
        let l = limits(100, 20);
        let chunks = chunk(&word, DocFormat::Text, &l).unwrap();
        check(&chunks, &l);
        // A chunk that is one unbroken word has no whole word to repeat.
        let rejoined: String = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(rejoined, word);
        let mixed = format!("start {word} end");
        let chunks = chunk(&mixed, DocFormat::Text, &l).unwrap();
        check(&chunks, &l);
        assert!(chunks[0].text.starts_with("start ab"));
        assert!(chunks.last().unwrap().text.ends_with("ab end"));
    }

    #[test]
    fn unicode() {
        // CJK without spaces: sentences end at 。, characters are never split.
        let cjk = "知识库把文档切成小块以便检索。".repeat(300);
        let l = limits(50, 10);
        let chunks = chunk(&cjk, DocFormat::Text, &l).unwrap();
        check(&chunks, &l);
        assert!(chunks.len() > 10);
        for c in &chunks {
            assert!(c.text.ends_with('。'), "{:?}", c.text);
        }
        let emoji = "🙂🙃 naïve café Grüße ".repeat(500);
        let chunks = chunk(&emoji, DocFormat::Text, &l).unwrap();
        check(&chunks, &l);
        let heading = md("# Überblick 🙂\nTexte.");
        assert_eq!(headings(&heading), [Some("Überblick 🙂")]);
        let unspaced = "é".repeat(5_000);
        let chunks = chunk(&unspaced, DocFormat::Text, &l).unwrap();
        check(&chunks, &l);
        assert_eq!(
            chunks.iter().map(|c| c.text.as_str()).collect::<String>(),
            unspaced
        );
    }

    #[test]
    fn code_keeps_its_lines_when_split() {
        let code = (0..200)
            .map(|i| format!("    let x{i} = {i};"))
            .collect::<Vec<_>>()
            .join("\n");
        let doc = format!("# Code\n```rust\n{code}\n```");
        let l = limits(80, 0);
        let chunks = chunk(&doc, DocFormat::Markdown, &l).unwrap();
        check(&chunks, &l);
        assert!(chunks.len() > 1);
        assert!(
            chunks[1].text.contains(";\n    let"),
            "{:?}",
            chunks[1].text
        );
    }

    #[test]
    fn html_documents() {
        let html = "<html><head><title>x</title></head><body><p>Intro</p><h1>Guide</h1><p>a &amp; b</p>\
                    <h2>Install</h2><script>var x = '<h3>no</h3>';</script><p>steps</p><h1>Other</h1>text</body></html>";
        let chunks = chunk(html, DocFormat::Html, &Limits::default()).unwrap();
        assert_eq!(
            headings(&chunks),
            [None, Some("Guide"), Some("Guide > Install"), Some("Other")]
        );
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["Intro", "a & b", "steps", "text"]);
    }

    #[test]
    fn plain_text_has_no_headings() {
        let chunks = chunk(
            "# not a heading\r\n\r\nbody",
            DocFormat::Text,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "# not a heading\n\nbody");
        assert_eq!(chunks[0].heading, None);
    }

    #[test]
    fn empty_documents() {
        let cases = [
            ("", DocFormat::Text),
            (" \n\t\r\n ", DocFormat::Text),
            ("", DocFormat::Markdown),
            ("# Only\n## Headings\n", DocFormat::Markdown),
            ("<html><script>x()</script><p> </p></html>", DocFormat::Html),
            ("<!-- nothing -->", DocFormat::Html),
        ];
        for (content, format) in cases {
            let err = chunk(content, format, &Limits::default()).unwrap_err();
            assert_eq!(err, KnowledgeError::Empty, "{content:?}");
            assert_eq!(err.code(), "empty_document");
        }
    }

    #[test]
    fn size_limit_is_on_raw_bytes() {
        let l = Limits {
            max_document_bytes: 100,
            ..Limits::default()
        };
        assert!(chunk(&"a".repeat(100), DocFormat::Text, &l).is_ok());
        let err = chunk(&"a".repeat(101), DocFormat::Text, &l).unwrap_err();
        assert_eq!(
            err,
            KnowledgeError::TooLarge {
                bytes: 101,
                limit: 100
            }
        );
        assert_eq!(err.code(), "document_too_large");
        // Markup that would be dropped still counts.
        let html = format!("<script>{}</script><p>hi</p>", "x".repeat(200));
        assert!(matches!(
            chunk(&html, DocFormat::Html, &l),
            Err(KnowledgeError::TooLarge { .. })
        ));
        // Checked before emptiness.
        assert!(matches!(
            chunk(&" ".repeat(101), DocFormat::Text, &l),
            Err(KnowledgeError::TooLarge { .. })
        ));
    }

    #[test]
    fn invalid_limits() {
        for l in [limits(0, 0), limits(10, 10), limits(10, 11)] {
            let err = chunk("text", DocFormat::Text, &l).unwrap_err();
            assert_eq!(err.code(), "invalid_limits", "{l:?}");
        }
        let chunks = chunk("a b c d e", DocFormat::Text, &limits(1, 0)).unwrap();
        assert_eq!(chunks.len(), 5);
    }

    #[test]
    fn documents_at_the_size_limit() {
        let l = Limits::default();
        let prose = "A sentence of prose, with punctuation. ".repeat(50_000);
        let prose = &prose[..l.max_document_bytes.min(prose.len())];
        check(&chunk(prose, DocFormat::Text, &l).unwrap(), &l);
        let headings = "# H\nx\n".repeat(l.max_document_bytes / 7);
        let chunks = chunk(&headings, DocFormat::Markdown, &l).unwrap();
        assert_eq!(chunks.len(), l.max_document_bytes / 7);
        let unspaced = "x".repeat(l.max_document_bytes);
        check(&chunk(&unspaced, DocFormat::Text, &l).unwrap(), &l);
    }

    #[test]
    fn deterministic() {
        let doc = "# T\n".to_owned() + &"Some words here. And more words there!\n\n".repeat(200);
        let l = limits(64, 16);
        assert_eq!(
            chunk(&doc, DocFormat::Markdown, &l).unwrap(),
            chunk(&doc, DocFormat::Markdown, &l).unwrap()
        );
    }

    #[test]
    fn sentence_splitting() {
        assert_eq!(
            sentences("One. Two!  \"Three?\" Four… 3.14 is pi. 五。六！end"),
            [
                ("", "One."),
                (" ", "Two!"),
                ("  ", "\"Three?\""),
                (" ", "Four…"),
                (" ", "3.14 is pi."),
                (" ", "五。"),
                ("", "六！"),
                ("", "end"),
            ]
        );
    }
}
