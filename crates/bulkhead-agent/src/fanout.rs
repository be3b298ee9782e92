//! Bounds on what one model answer can make the runtime do and carry:
//! how many of its tool calls are made, and how much of their results is
//! kept. A compromised model can ask for thousands of calls in one answer
//! and a tool can answer megabytes; without these bounds one run posts
//! thousands of messages and the next model request grows without limit.
//!
//! Cutting is by bytes on a character boundary, with a marker the model
//! sees, so it knows the result is incomplete rather than trusting a
//! silently shortened answer.

/// Text kept of `text` within `max` bytes, the marker included. Unchanged
/// when it fits.
pub(crate) fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let marker = format!(
        "\n[truncated by bulkhead: {} of {} bytes omitted]",
        text.len(),
        text.len()
    );
    let mut keep = max.saturating_sub(marker.len());
    while keep > 0 && !text.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(
        "{}\n[truncated by bulkhead: {} of {} bytes omitted]",
        &text[..keep],
        text.len() - keep,
        text.len()
    )
}

/// The largest share `s` with `Σ min(len, s) ≤ total` (water filling):
/// small items keep everything, large ones are cut to the same size.
pub(crate) fn fair_share(lengths: &[usize], total: usize) -> usize {
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable();
    let mut left = total;
    let mut remaining = sorted.len();
    for len in sorted {
        if len.saturating_mul(remaining) > left {
            return left / remaining.max(1);
        }
        left -= len;
        remaining -= 1;
    }
    usize::MAX
}

/// Cuts each of one round's tool results to `per_result` bytes, then all
/// of them to a fair share of `per_round`. Returns how many were cut.
pub(crate) fn limit_round(contents: &mut [String], per_result: usize, per_round: usize) -> usize {
    let original: Vec<usize> = contents.iter().map(String::len).collect();
    for c in contents.iter_mut() {
        if c.len() > per_result {
            *c = cut(c, per_result);
        }
    }
    let lengths: Vec<usize> = contents.iter().map(String::len).collect();
    if lengths.iter().sum::<usize>() > per_round {
        let share = fair_share(&lengths, per_round);
        for c in contents.iter_mut() {
            if c.len() > share {
                *c = cut(c, share);
            }
        }
    }
    contents
        .iter()
        .zip(original)
        .filter(|(c, len)| c.len() != *len)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutting_keeps_the_limit_and_says_so() {
        assert_eq!(cut("short", 100), "short");
        let long = "é".repeat(500);
        let c = cut(&long, 300);
        assert!(c.len() <= 300, "{}", c.len());
        assert!(c.contains("[truncated by bulkhead:"), "{c}");
        assert!(c.starts_with('é'));
    }

    #[test]
    fn a_fair_share_leaves_small_results_whole() {
        assert_eq!(fair_share(&[10, 20], 100), usize::MAX);
        assert_eq!(fair_share(&[10, 100, 100], 110), 50);
        assert_eq!(fair_share(&[], 0), usize::MAX);
        let mut c = vec!["a".repeat(10), "b".repeat(5000), "c".repeat(5000)];
        let n = limit_round(&mut c, 4000, 3000);
        assert_eq!(n, 2);
        assert_eq!(c[0].len(), 10);
        assert!(c.iter().map(String::len).sum::<usize>() <= 3000);
    }
}
