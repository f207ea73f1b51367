//! How minimal an edit is: the word-level Levenshtein distance between the seed and its
//! variant, over the seed's length in words. A one-word swap in a 40-word seed is 0.025; a
//! rewrite approaches or passes 1.

/// Edit distance over whitespace-separated tokens, divided by the seed's token count.
pub fn token_edit_ratio(seed: &str, variant: &str) -> f64 {
    let a: Vec<&str> = seed.split_whitespace().collect();
    let b: Vec<&str> = variant.split_whitespace().collect();
    let distance = token_distance(&a, &b);
    distance as f64 / a.len().max(1) as f64
}

fn token_distance(a: &[&str], b: &[&str]) -> usize {
    // A minimal edit leaves a long common prefix and suffix; only the middle needs the table.
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a, b) = (&a[..a.len() - suffix], &b[..b.len() - suffix]);
    if a.is_empty() || b.is_empty() {
        return a.len().max(b.len());
    }
    if a.len().saturating_mul(b.len()) > 4_000_000 {
        // Huge rewrites: the upper bound is as good as exact for flagging.
        return a.len().max(b.len());
    }
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(x != y);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios() {
        assert_eq!(token_edit_ratio("a b c d", "a b c d"), 0.0);
        assert_eq!(token_edit_ratio("a b c d", "a x c d"), 0.25);
        assert_eq!(token_edit_ratio("a b c d", "a c d"), 0.25);
        assert_eq!(token_edit_ratio("a b c d", "a b y z c d"), 0.5);
        assert_eq!(token_edit_ratio("a b", "c d e f"), 2.0);
        assert_eq!(token_edit_ratio("", "x"), 1.0);
        assert_eq!(token_distance(&["k", "i", "t"], &["s", "i", "t", "s"]), 2);
    }
}
