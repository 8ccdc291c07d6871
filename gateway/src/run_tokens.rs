//! Run-scoped tokens: the only credential a runtime has for the connector
//! gateway. When the gateway forwards a run of an Instance with connector
//! bindings, it mints a token naming the run, the Instance and when the
//! plan's timeout passes ([`RunTokens::mint`]). The token opens that
//! Instance's bindings, and nothing else, until the earlier of:
//!
//! - its expiry (the plan's timeout): checked by every replica from the
//!   token alone, since every replica shares the signing secret;
//! - the run's end: the replica that forwarded the run marks it ended when
//!   it settles ([`RunTokens::end`]) and tells its peers in the next demand
//!   report ([`crate::peers`], five times a second), so a finished run's
//!   token is refused everywhere within about 200 ms of the run's end.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::signed::Signer;

/// The prefix of a run token.
pub const TOKEN_PREFIX: &str = "cmpr_";
/// How long an ended run is repeated in the demand reports (several, so one lost report loses nothing).
const REPORTED_FOR: Duration = Duration::from_secs(2);

/// What a run token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunClaims {
    /// The run id.
    pub run: String,
    /// The Instance's control namespace.
    pub ns: String,
    /// The Instance's name.
    pub instance: String,
    /// When the token ends (Unix seconds): the run's deadline.
    pub exp: i64,
}

/// Why a run token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// Not a token this gateway made.
    #[error("the run token is not valid: the connector gateway takes only the token of a current run")]
    Invalid,
    /// Its run has ended or passed its deadline.
    #[error("the run this token was made for has ended: a token works only during its run")]
    Ended,
}

#[derive(Default)]
struct Ended {
    /// Run id → the token's expiry (kept until then) and when it ended here (for reporting).
    runs: HashMap<String, (i64, Option<Instant>)>,
}

/// Mints and checks run tokens, and knows which runs have ended.
pub struct RunTokens {
    signer: Signer,
    ended: Mutex<Ended>,
}

impl RunTokens {
    /// Tokens signed under `secret`, shared by every replica.
    pub fn new(secret: &[u8]) -> Self {
        Self { signer: Signer::new(secret, "run-token", TOKEN_PREFIX), ended: Mutex::default() }
    }

    /// The token of run `run` of Instance `ns/instance`, valid until `deadline`.
    pub fn mint(&self, run: &str, ns: &str, instance: &str, deadline: Timestamp) -> String {
        self.signer.sign(&RunClaims {
            run: run.to_string(),
            ns: ns.to_string(),
            instance: instance.to_string(),
            exp: deadline.as_second(),
        })
    }

    /// What `token` says, if it is ours and its run is current.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<RunClaims, TokenRefusal> {
        let claims: RunClaims = self.signer.verify(token).ok_or(TokenRefusal::Invalid)?;
        let ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner).runs.contains_key(&claims.run);
        if ended || claims.exp <= now.as_second() {
            return Err(TokenRefusal::Ended);
        }
        Ok(claims)
    }

    /// Marks run `run` (whose token lasts until `exp`) ended here.
    pub fn end(&self, run: &str, exp: i64) {
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        ended.runs.insert(run.to_string(), (exp, Some(Instant::now())));
    }

    /// The runs that ended here lately, for the peers; forgets runs whose tokens have expired anyway.
    pub fn report(&self, now: Timestamp) -> Vec<(String, i64)> {
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        ended.runs.retain(|_, (exp, _)| *exp > now.as_second());
        ended
            .runs
            .iter()
            .filter(|(_, (_, at))| at.is_some_and(|at| at.elapsed() < REPORTED_FOR))
            .map(|(run, (exp, _))| (run.clone(), *exp))
            .collect()
    }

    /// Records that a peer ended run `run`, whose token lasts until `exp`.
    pub fn ended_elsewhere(&self, run: &str, exp: i64, now: Timestamp) {
        if exp <= now.as_second() {
            return;
        }
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        if ended.runs.len() < 1_000_000 {
            ended.runs.entry(run.to_string()).or_insert((exp, None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("a time")
    }

    #[test]
    fn a_token_opens_its_run_until_the_deadline_or_the_end() {
        let tokens = RunTokens::new(b"a secret every replica shares");
        let token = tokens.mint("run_1", "cmp-acme", "bot", at(60));
        let claims = tokens.verify(&token, at(0)).expect("current");
        assert_eq!((claims.ns.as_str(), claims.instance.as_str()), ("cmp-acme", "bot"));
        assert_eq!(tokens.verify(&token, at(60)), Err(TokenRefusal::Ended), "past the plan's timeout");
        tokens.end("run_1", claims.exp);
        assert_eq!(tokens.verify(&token, at(1)), Err(TokenRefusal::Ended), "the run settled");
        assert_eq!(tokens.verify("cmpr_x.y", at(0)), Err(TokenRefusal::Invalid));
        let other = RunTokens::new(b"another gateway's secret");
        assert_eq!(other.verify(&token, at(0)), Err(TokenRefusal::Invalid));
    }

    #[test]
    fn a_run_ended_on_one_replica_is_refused_on_another_after_a_report() {
        let (a, b) = (RunTokens::new(b"shared"), RunTokens::new(b"shared"));
        let token = a.mint("run_2", "cmp-acme", "bot", at(60));
        assert!(b.verify(&token, at(0)).is_ok(), "any replica takes a current token");
        a.end("run_2", at(60).as_second());
        for (run, exp) in a.report(at(1)) {
            b.ended_elsewhere(&run, exp, at(1));
        }
        assert_eq!(b.verify(&token, at(1)), Err(TokenRefusal::Ended));
        assert!(a.report(at(61)).is_empty(), "forgotten once the token has expired anyway");
    }
}
