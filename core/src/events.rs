//! Kubernetes Events as the CMP binaries publish them.

/// The most an Event's note may hold (the API server refuses longer ones).
const NOTE_MAX_BYTES: usize = 1024;

/// `note`, cut to what an Event may hold, on a character boundary and marked as cut.
pub fn note(note: String) -> String {
    if note.len() <= NOTE_MAX_BYTES {
        return note;
    }
    const MARK: &str = " …";
    let mut end = NOTE_MAX_BYTES - MARK.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_event_note_is_cut_to_what_the_api_server_takes_on_a_character_boundary() {
        assert_eq!(note("short".into()), "short");
        let long = "é".repeat(700);
        let cut = note(long.clone());
        assert!(cut.len() <= NOTE_MAX_BYTES, "{}", cut.len());
        assert!(cut.ends_with(" …"));
        assert!(long.starts_with(cut.trim_end_matches(" …")));
    }
}
