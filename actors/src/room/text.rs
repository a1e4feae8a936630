//! What a chat message may say (docs/PROTOCOL.md "Chat"): 1..=2000 characters after trimming
//! whitespace at both ends, and no control characters (newlines and tabs inside are fine).

/// The longest message, in characters.
pub const MAX_CHARS: usize = 2000;

/// The text to store, or why it is refused (a client-facing message).
pub fn clean(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("text is empty".into());
    }
    let n = t.chars().count();
    if n > MAX_CHARS {
        return Err(format!("text is {n} characters; at most {MAX_CHARS}"));
    }
    if let Some(c) = t
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        return Err(format!(
            "text contains the control character U+{:04X}",
            u32::from(c)
        ));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_refuses() {
        assert_eq!(clean("  hi there \n").as_deref(), Ok("hi there"));
        assert_eq!(
            clean("line\nbreak\tand tab").as_deref(),
            Ok("line\nbreak\tand tab")
        );
        assert_eq!(
            clean(&"é".repeat(2000)).map(|s| s.chars().count()),
            Ok(2000)
        );
        for bad in ["", "   \n\t ", "bell\u{7}", "esc\u{1b}[31m", "nul\0x"] {
            assert!(clean(bad).is_err(), "{bad:?}");
        }
        assert!(clean(&"x".repeat(2001)).unwrap_err().contains("2001"));
    }
}
