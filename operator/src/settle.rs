//! Triggers that only refresh counts, let settle: each is delivered a fixed
//! window after it first arrived, and the triggers for the same object that
//! arrive meanwhile join it.
//!
//! A Project counts its Instances and an Offering counts them by version and
//! plan. A burst of 1,000 Instances used to rewrite the Offering's status
//! about a hundred times and each Project's two or three times, through the
//! same API server as the Instances themselves. Settled, an object's counts
//! are written at most once per window during a burst, and lag at most one
//! window behind.
//!
//! Unlike kube-runtime's debounce, a later trigger never postpones an
//! earlier one, so a steady stream of Instances cannot hold the counts back,
//! and only these triggers wait: the object's own changes (a new Offering
//! version, a Project's quota) wake it at once.

use std::collections::HashSet;
use std::hash::Hash;
use std::pin::Pin;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};

/// How long a count trigger waits for others to join it.
pub const COUNTS_SETTLE: Duration = Duration::from_secs(1);

type Due<T> = Pin<Box<dyn Future<Output = T> + Send>>;

struct Settling<S, T> {
    triggers: Option<Pin<Box<S>>>,
    waiting: HashSet<T>,
    due: FuturesUnordered<Due<T>>,
}

/// Delivers each of `triggers` `window` after the first of its kind
/// arrived; equal ones arriving meanwhile are delivered with it. Ends once
/// `triggers` has ended and everything waiting was delivered.
pub fn settled<S, T>(triggers: S, window: Duration) -> impl Stream<Item = T> + Send
where
    S: Stream<Item = T> + Send + 'static,
    T: Clone + Eq + Hash + Send + Sync + 'static,
{
    let start = Settling { triggers: Some(Box::pin(triggers)), waiting: HashSet::new(), due: FuturesUnordered::new() };
    futures::stream::unfold(start, move |mut state| async move {
        loop {
            tokio::select! {
                arrived = next_of(&mut state.triggers), if state.triggers.is_some() => match arrived {
                    Some(trigger) if state.waiting.insert(trigger.clone()) => state.due.push(Box::pin(async move {
                        tokio::time::sleep(window).await;
                        trigger
                    })),
                    Some(_) => {}
                    None => state.triggers = None,
                },
                Some(trigger) = state.due.next() => {
                    state.waiting.remove(&trigger);
                    return Some((trigger, state));
                }
                else => return None,
            }
        }
    })
}

async fn next_of<S: Stream + ?Sized>(stream: &mut Option<Pin<Box<S>>>) -> Option<S::Item> {
    match stream {
        Some(stream) => stream.next().await,
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// What `settled` delivers for `(name, arriving after ms)`, with when (ms after the start).
    async fn delivered(arrivals: &[(&'static str, u64)]) -> Vec<(&'static str, u128)> {
        let start = Instant::now();
        let arrivals = arrivals.to_vec();
        let triggers = futures::stream::iter(arrivals).then(move |(name, at)| async move {
            tokio::time::sleep_until(start + Duration::from_millis(at)).await;
            name
        });
        settled(triggers, COUNTS_SETTLE).map(|name| (name, start.elapsed().as_millis())).collect().await
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_for_one_object_is_delivered_once_a_window_after_its_first_trigger() {
        let got = delivered(&[("offering", 0), ("offering", 100), ("offering", 900)]).await;
        assert_eq!(got, vec![("offering", 1_000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_is_delivered_every_window_never_postponed() {
        let arrivals: Vec<(&str, u64)> = (0..25).map(|i| ("offering", i * 130)).collect();
        let got = delivered(&arrivals).await;
        let every_window = vec![("offering", 1_000), ("offering", 2_040), ("offering", 3_080), ("offering", 4_120)];
        assert_eq!(got, every_window, "each window opens with the first trigger after the last delivery");
    }

    #[tokio::test(start_paused = true)]
    async fn each_object_settles_on_its_own() {
        let got = delivered(&[("p1", 0), ("p2", 300), ("p1", 500), ("p2", 1_400)]).await;
        assert_eq!(got, vec![("p1", 1_000), ("p2", 1_300), ("p2", 2_400)]);
    }
}
