//! Taking a run's token out of the runtime's answer. lfx echoes a run's
//! request globals (`"globals": {"CMP_RUN_TOKEN": ...}`) in its answer, a
//! flow may print them, and the caller is never given the token: every
//! occurrence is replaced, in a buffered answer and in a streamed one alike.
//! A stream may split the token between two chunks, so the end of a chunk
//! that could be the token's beginning is held back until the next chunk
//! shows whether it is; nothing else is held, so events still leave as they
//! arrive.

use bytes::{Bytes, BytesMut};

/// What the token is replaced with.
pub const REPLACEMENT: &[u8] = b"[the run's token]";

/// Replaces one token in a stream of chunks.
pub struct TokenScrub {
    token: Vec<u8>,
    held: BytesMut,
}

impl TokenScrub {
    /// A scrub of `token` (an empty token is never looked for).
    pub fn new(token: &str) -> Self {
        Self { token: token.as_bytes().to_vec(), held: BytesMut::new() }
    }

    /// The next chunk without the token, except a tail that may be the token's beginning (kept for the next chunk).
    pub fn next_chunk(&mut self, chunk: &[u8]) -> Bytes {
        if self.token.is_empty() {
            return Bytes::copy_from_slice(chunk);
        }
        if self.held.is_empty() && !chunk.contains(&self.token[0]) {
            return Bytes::copy_from_slice(chunk);
        }
        self.held.extend_from_slice(chunk);
        let replaced = replace_all(&self.held, &self.token);
        let keep = partial_suffix(&replaced, &self.token);
        let mut replaced = BytesMut::from(&replaced[..]);
        self.held = replaced.split_off(replaced.len() - keep);
        replaced.freeze()
    }

    /// What was held back at the end of the stream (it was not the token).
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.held).freeze()
    }

    /// A whole answer without the token.
    pub fn whole(token: &str, answer: Bytes) -> Bytes {
        if token.is_empty() || !contains(&answer, token.as_bytes()) {
            return answer;
        }
        Bytes::from(replace_all(&answer, token.as_bytes()))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn replace_all(text: &[u8], token: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        if text[at..].starts_with(token) {
            out.extend_from_slice(REPLACEMENT);
            at += token.len();
        } else {
            out.push(text[at]);
            at += 1;
        }
    }
    out
}

/// The length of the longest end of `text` that is a proper beginning of `token`.
fn partial_suffix(text: &[u8], token: &[u8]) -> usize {
    let longest = (token.len() - 1).min(text.len());
    (1..=longest).rev().find(|&n| token.starts_with(&text[text.len() - n..])).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "cmpr_eyJydW4iOiJydW5fMSJ9.sig";

    fn streamed(chunks: &[&[u8]]) -> (Vec<u8>, Vec<Bytes>) {
        let mut scrub = TokenScrub::new(TOKEN);
        let mut sent: Vec<Bytes> = chunks.iter().map(|c| scrub.next_chunk(c)).collect();
        sent.push(scrub.finish());
        (sent.concat(), sent)
    }

    #[test]
    fn a_whole_answer_never_holds_the_token_and_one_without_it_is_passed_unchanged() {
        let echoed =
            format!(r#"{{"status":"completed","output":{{"text":"ok"}},"globals":{{"CMP_RUN_TOKEN":"{TOKEN}"}}}}"#);
        let answer = TokenScrub::whole(TOKEN, Bytes::from(echoed));
        let text = std::str::from_utf8(&answer).expect("text");
        assert!(!text.contains(TOKEN) && text.contains(r#""CMP_RUN_TOKEN":"[the run's token]""#), "{text}");
        let plain = Bytes::from_static(br#"{"output":{"text":"ok"}}"#);
        assert_eq!(TokenScrub::whole(TOKEN, plain.clone()), plain);
    }

    #[test]
    fn a_token_split_across_chunks_at_every_point_is_replaced_and_nothing_else_changes() {
        let answer = format!("data: {{\"a\":\"{TOKEN}\"}}\n\ndata: cmpr_ not the token, é {TOKEN}{TOKEN}\n\n");
        let expected = answer.replace(TOKEN, "[the run's token]");
        let bytes = answer.as_bytes();
        for cut in 0..=bytes.len() {
            for second in cut..=bytes.len() {
                let (text, _) = streamed(&[&bytes[..cut], &bytes[cut..second], &bytes[second..]]);
                assert_eq!(String::from_utf8(text).expect("utf-8"), expected, "cut at {cut} and {second}");
            }
        }
    }

    #[test]
    fn an_event_that_cannot_begin_the_token_leaves_at_once() {
        let (_, sent) = streamed(&[b"data: {\"chunk\":\"hello\"}\n\n", b"data: {\"chunk\":\"cm", b"x\"}\n\n"]);
        assert_eq!(&sent[0][..], b"data: {\"chunk\":\"hello\"}\n\n", "nothing held");
        assert_eq!(&sent[1][..], b"data: {\"chunk\":\"", "only what may begin the token is held");
        assert_eq!(&sent[2][..], b"cmx\"}\n\n", "and sent once it is not the token");
        let (text, sent) = streamed(&[b"ends with c"]);
        assert_eq!(
            (&sent[0][..], &text[..]),
            (&b"ends with "[..], &b"ends with c"[..]),
            "the end is sent at the finish"
        );
    }
}
