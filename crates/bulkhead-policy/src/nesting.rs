//! A bound on how deeply policy text nests, checked before Cedar sees it.
//!
//! Cedar's parser, validator and evaluator recurse once (or several times)
//! per level of brackets, and a few hundred bytes of `((((…))))` overflow
//! a 2 MiB thread stack and abort the whole process. Chains of binary
//! operators (`a && b && …`) do not: Cedar handles them without deep
//! recursion, so only nesting is bounded here.
//!
//! The scan is deliberately conservative: every `(`, `[` and `{` opens a
//! level, and every `if` opens one that closes only with its enclosing
//! bracket (an `else if` chain nests as deeply as nested `if`s do). String
//! literals and `//` comments are skipped, so brackets inside them never
//! count.

/// Deepest nesting accepted in one tenant's policy text: brackets and
/// `if`s together. Real policies stay under ten (`permit(` and `when {`
/// are two); a debug build's 2 MiB stack survives about thirty.
pub const MAX_POLICY_NESTING: usize = 24;

/// Where text first nests deeper than `max`: `(line, column)`, 1-based.
pub fn too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    // One entry per open bracket: the `if`s opened inside it so far.
    let mut frames: Vec<usize> = vec![0];
    let mut depth = 0usize;
    let (mut line, mut col) = (1usize, 0usize);
    let mut chars = text.chars().peekable();
    let mut prev_ident = false;
    while let Some(c) = chars.next() {
        col += 1;
        if c == '\n' {
            line += 1;
            col = 0;
        }
        match c {
            '"' => {
                // A string literal: skip to its closing quote, past escapes.
                while let Some(s) = chars.next() {
                    col += 1;
                    match s {
                        '\\' => {
                            chars.next();
                            col += 1;
                        }
                        '"' => break,
                        '\n' => {
                            line += 1;
                            col = 0;
                        }
                        _ => {}
                    }
                }
                prev_ident = false;
                continue;
            }
            '/' if chars.peek() == Some(&'/') => {
                for s in chars.by_ref() {
                    if s == '\n' {
                        line += 1;
                        col = 0;
                        break;
                    }
                }
                prev_ident = false;
                continue;
            }
            '(' | '[' | '{' => {
                depth += 1;
                frames.push(0);
                if depth > max {
                    return Some((line, col));
                }
            }
            ')' | ']' | '}' if frames.len() > 1 => {
                let ifs = frames.pop().unwrap_or(0);
                depth = depth.saturating_sub(1 + ifs);
            }
            'i' if !prev_ident && chars.peek() == Some(&'f') => {
                let mut ahead = chars.clone();
                ahead.next();
                let boundary = ahead.peek().is_none_or(|n| !is_ident(*n));
                if boundary {
                    chars.next();
                    col += 1;
                    depth += 1;
                    if let Some(ifs) = frames.last_mut() {
                        *ifs += 1;
                    }
                    if depth > max {
                        return Some((line, col - 1));
                    }
                    prev_ident = true;
                    continue;
                }
            }
            _ => {}
        }
        prev_ident = is_ident(c);
    }
    None
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_and_ifs_count_strings_and_comments_do_not() {
        assert_eq!(too_deep("((()))", 3), None);
        assert_eq!(too_deep("(((())))", 3), Some((1, 4)));
        assert_eq!(too_deep("[{(\n)}]", 3), None);
        assert_eq!(too_deep("\"((((((((\" // ((((((((\n()", 1), None);
        assert_eq!(too_deep("\"\\\"((((\"", 1), None);
        // `if` opens a level until its enclosing bracket closes.
        assert_eq!(
            too_deep("(if a then b else if c then d else e)", 2),
            Some((1, 19))
        );
        assert_eq!(
            too_deep("(if a then b else c) (if x then y else z)", 2),
            None
        );
        // Words that merely contain `if` do not count.
        assert_eq!(too_deep("(iff gift if_x xif)", 1), None);
    }

    #[test]
    fn unbalanced_closers_do_not_underflow() {
        assert_eq!(too_deep(")))))(((", 3), None);
        assert_eq!(too_deep(")))))((((", 3), Some((1, 9)));
    }
}
