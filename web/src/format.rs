//! Numbers as the views print them.

/// `v` with `digits` decimals; a value that rounds to zero prints without a sign ("0.0000",
/// never "-0.0000"), a missing one as "–".
pub fn fixed(v: Option<f64>, digits: usize) -> String {
    let Some(v) = v else {
        return "–".to_owned();
    };
    let s = format!("{v:.digits$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.bytes().all(|b| b == b'0' || b == b'.') => rest.to_owned(),
        _ => s,
    }
}

/// 20750 → "20,750".
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_negative_zero_and_thousands() {
        assert_eq!(fixed(Some(-0.00001), 4), "0.0000");
        assert_eq!(fixed(Some(-0.0), 4), "0.0000");
        assert_eq!(fixed(Some(-0.00006), 4), "-0.0001");
        assert_eq!(fixed(Some(1.23456), 2), "1.23");
        assert_eq!(fixed(None, 2), "–");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(20750), "20,750");
        assert_eq!(count(1234567), "1,234,567");
    }
}
