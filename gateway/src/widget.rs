//! Demo runs for the store's widget: an anonymous visitor gets a short-lived
//! signed session token for an Offering with a demo allowance, and with it
//! `runsPerSession` free runs of the Offering's demo Instance (paid by that
//! Instance's Organization), at the demo's rate per client.
//!
//! A session token is `cmpw_<payload>.<signature>`: base64url of
//! `{"sid","offering","exp"}` and of its HMAC-SHA256 under the secret every
//! replica shares (`--widget-secret`), so any replica can check any token
//! with no call and no shared store. The runs of a session are counted by
//! each replica and shared with its peers in the demand reports
//! ([`crate::peers`]), five times a second: a session may get a few runs
//! more than its allowance when it sends them to several replicas within
//! one report interval (at most its runs in those 200 ms), and each replica
//! keeps a small counter per live session until its token expires.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::refusal::{Code, Refusal};
use crate::signed::Signer;

/// The prefix of a session token.
pub const TOKEN_PREFIX: &str = "cmpw_";
/// The header a widget run carries its session token in.
pub const SESSION_HEADER: &str = "x-widget-session";
/// How long a session only peers served is remembered after their last report.
const REMOTE_ONLY_SECONDS: i64 = 60;
/// How long a peer's count of a session counts.
const REPORT_TTL: Duration = Duration::from_secs(5);

/// What a session token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The session id (random).
    pub sid: String,
    /// The Offering it demonstrates.
    pub offering: String,
    /// When it ends (Unix seconds).
    pub exp: i64,
}

#[derive(Debug, Default)]
struct Count {
    local: u32,
    remote: HashMap<String, (u32, Instant)>,
    expires: i64,
}

/// Issues, checks and counts demo sessions.
pub struct WidgetSessions {
    signer: Signer,
    ttl: Duration,
    counts: Mutex<HashMap<String, Count>>,
}

fn malformed() -> Refusal {
    Refusal::new(Code::InvalidToken, "the widget session token is not valid: start a new session")
}

impl WidgetSessions {
    /// Sessions signed with `secret`, each lasting `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self { signer: Signer::new(secret, "widget-session", TOKEN_PREFIX), ttl, counts: Mutex::default() }
    }

    /// A new session of `offering`: its token and when it ends.
    pub fn issue(&self, offering: &str, now: Timestamp) -> (String, Timestamp) {
        let ends =
            now + k8s_openapi::jiff::SignedDuration::from_secs(i64::try_from(self.ttl.as_secs()).unwrap_or(3600));
        let session = Session {
            sid: hex::encode(rand::random::<[u8; 16]>()),
            offering: offering.to_string(),
            exp: ends.as_second(),
        };
        (self.signer.sign(&session), ends)
    }

    /// The session a token proves, if it is ours and current.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Session, Refusal> {
        let session: Session = self.signer.verify(token).ok_or_else(malformed)?;
        if session.exp <= now.as_second() {
            return Err(Refusal::new(Code::InvalidToken, "the widget session has ended: start a new session"));
        }
        Ok(session)
    }

    /// Counts one run of `session` if it has runs left of `allowance`.
    pub fn take_run(&self, session: &Session, allowance: u32, now: Instant) -> Result<u32, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(session.sid.clone()).or_default();
        count.expires = count.expires.max(session.exp);
        let elsewhere: u32 = count
            .remote
            .values()
            .filter(|(_, heard)| now.saturating_duration_since(*heard) < REPORT_TTL)
            .map(|(n, _)| *n)
            .sum();
        let used = count.local + elsewhere;
        if used >= allowance {
            return Err(Refusal::new(
                Code::DemoExhausted,
                format!("this demo session's {allowance} free runs are used: buy the Offering to go on"),
            ));
        }
        count.local += 1;
        Ok(allowance - used - 1)
    }

    /// This replica's run counts of live sessions, for its peers; forgets ended sessions.
    pub fn report(&self, now: Timestamp) -> Vec<(String, u32)> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.retain(|_, c| c.expires > now.as_second());
        counts.iter().filter(|(_, c)| c.local > 0).map(|(sid, c)| (sid.clone(), c.local)).collect()
    }

    /// Records peer `replica`'s count of session `sid`. A session this
    /// replica has not served is kept while reports keep coming (its token's
    /// end is unknown here): [`REMOTE_ONLY_SECONDS`] past the last one.
    pub fn remote(&self, replica: &str, sid: &str, runs: u32, now: Instant, wall: Timestamp) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.len() > 1_000_000 && !counts.contains_key(sid) {
            return;
        }
        let count = counts.entry(sid.to_string()).or_default();
        count.expires = count.expires.max(wall.as_second() + REMOTE_ONLY_SECONDS);
        count.remote.insert(replica.to_string(), (runs, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("a time")
    }

    #[test]
    fn a_token_proves_its_session_until_it_ends() {
        let sessions = WidgetSessions::new(b"secret", Duration::from_secs(600));
        let (token, ends) = sessions.issue("echo", now());
        let session = sessions.verify(&token, now()).expect("valid");
        assert_eq!((session.offering.as_str(), session.exp), ("echo", ends.as_second()));
        assert_eq!(sessions.verify(&token, ends).expect_err("ended").code, Code::InvalidToken);
        let other = WidgetSessions::new(b"another secret", Duration::from_secs(600));
        assert_eq!(other.verify(&token, now()).expect_err("not ours").code, Code::InvalidToken);
        let (payload, tag) = token.split_once('.').expect("two parts");
        let forged = format!("{}x.{tag}", payload);
        assert_eq!(sessions.verify(&forged, now()).expect_err("forged").code, Code::InvalidToken);
        assert_eq!(sessions.verify("cmpw_", now()).expect_err("garbage").code, Code::InvalidToken);
    }

    #[test]
    fn a_session_gets_its_allowance_across_replicas() {
        let (a, b) =
            (WidgetSessions::new(b"s", Duration::from_secs(600)), WidgetSessions::new(b"s", Duration::from_secs(600)));
        let (token, _) = a.issue("echo", now());
        let session = a.verify(&token, now()).expect("valid");
        let t = Instant::now();
        assert_eq!(a.take_run(&session, 3, t), Ok(2));
        assert_eq!(a.take_run(&session, 3, t), Ok(1));
        for (sid, runs) in a.report(now()) {
            b.remote("a", &sid, runs, t, now());
        }
        assert_eq!(b.take_run(&session, 3, t), Ok(0), "b knows a's two runs");
        assert_eq!(b.take_run(&session, 3, t).expect_err("used up").code, Code::DemoExhausted);
    }

    #[test]
    fn counters_of_ended_sessions_and_silent_peers_are_forgotten() {
        let sessions = WidgetSessions::new(b"s", Duration::from_secs(600));
        let t = Instant::now();
        sessions.remote("peer", "heard-of-only", 2, t, now());
        let (token, ends) = sessions.issue("echo", now());
        let served = sessions.verify(&token, now()).expect("valid");
        sessions.take_run(&served, 3, t).expect("a free run");
        let later = |secs: i64| Timestamp::from_second(now().as_second() + secs).expect("a time");
        sessions.report(later(61));
        assert_eq!(sessions.counts.lock().expect("a lock").len(), 1, "the peer-only session is gone, ours stays");
        sessions.report(ends);
        assert!(sessions.counts.lock().expect("a lock").is_empty(), "ours is gone once its token ended");
    }
}
