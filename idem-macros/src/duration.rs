//! Durations written as text: `"500ms"`, `"10s"`, `"5m"`, `"24h"`, `"7d"`, `"1h30m"`.

/// Milliseconds in `text`, or why it is not a duration.
pub(crate) fn parse_millis(text: &str) -> Result<u64, String> {
    let malformed = || {
        format!(
            "malformed duration {text:?}: expected whole numbers with units, such as \
             \"500ms\", \"10s\", \"5m\", \"24h\", \"7d\" or \"1h30m\""
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(malformed());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(malformed());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| malformed())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(malformed()),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(unit)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("duration {text:?} is too long"))?;
    }
    if total == 0 {
        return Err(format!("duration {text:?} must be longer than zero"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_millis;

    #[test]
    fn units_and_compounds() {
        assert_eq!(parse_millis("500ms"), Ok(500));
        assert_eq!(parse_millis("10s"), Ok(10_000));
        assert_eq!(parse_millis("5m"), Ok(300_000));
        assert_eq!(parse_millis("24h"), Ok(86_400_000));
        assert_eq!(parse_millis("7d"), Ok(604_800_000));
        assert_eq!(parse_millis("1h30m"), Ok(5_400_000));
        assert_eq!(parse_millis("1m30s250ms"), Ok(90_250));
    }

    #[test]
    fn malformed_text_is_refused() {
        for text in [
            "",
            "10",
            "h",
            "10 s",
            "1.5s",
            "10sec",
            "-1s",
            "s10",
            "0s",
            "99999999999999999999d",
        ] {
            assert!(parse_millis(text).is_err(), "{text:?} was accepted");
        }
    }
}
