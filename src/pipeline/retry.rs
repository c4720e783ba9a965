//! The one retry helper: exponential backoff with jitter, cancelled by
//! shutdown. Only errors classified transient are retried.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::core::Classify;
use crate::metrics as m;

pub const RETRY_INITIAL: Duration = Duration::from_millis(500);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Delays that double from `initial` up to `max`; each is drawn between
/// half and all of the nominal delay, so many pipelines retrying the same
/// server do not hit it in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(RETRY_INITIAL, RETRY_MAX)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the one after doubles.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = nominal / 2;
        half + half.mul_f64(rand::thread_rng().gen::<f64>())
    }

    /// After a success: start again from the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Sleeps the next delay; false when shutdown came first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

impl Backoff {
    /// For a loop that cannot sleep here: logs and counts the retry of a
    /// transient error and returns how long to wait before trying again.
    pub fn schedule<E: Classify>(&mut self, e: &E, what: &str) -> Duration {
        let delay = self.next_delay();
        tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
        metrics::counter!(m::RETRIES, "what" => what.to_string()).increment(1);
        metrics::counter!(m::ERRORS, "class" => "transient").increment(1);
        delay
    }

    /// The retry decision for one failed attempt: a transient error is
    /// logged and waited out (`Ok`: try again); anything else, or shutdown,
    /// hands the error back. `what` names the attempt in logs
    /// ("connecting to the sink").
    pub async fn wait_or_fail<E: Classify>(
        &mut self,
        e: E,
        shutdown: &CancellationToken,
        what: &str,
    ) -> Result<(), E> {
        if !e.is_transient() || shutdown.is_cancelled() {
            return Err(e);
        }
        let delay = self.next_delay();
        tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
        metrics::counter!(m::RETRIES, "what" => what.to_string()).increment(1);
        metrics::counter!(m::ERRORS, "class" => "transient").increment(1);
        tokio::select! {
            _ = shutdown.cancelled() => Err(e),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// Runs `f` until it succeeds, fails with a non-transient error, or
/// shutdown is requested (then the last error is returned).
pub async fn retry<T, E, F, Fut>(shutdown: &CancellationToken, what: &str, mut f: F) -> Result<T, E>
where
    E: Classify,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::default();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => backoff.wait_or_fail(e, shutdown, what).await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::core::ErrorClass;

    #[derive(Debug)]
    struct E(bool);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "e")
        }
    }
    impl Classify for E {
        fn class(&self) -> ErrorClass {
            if self.0 {
                ErrorClass::Transient
            } else {
                ErrorClass::Fatal
            }
        }
    }

    #[test]
    fn delays_double_with_jitter_and_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        for (d, nominal) in d.iter().zip([100, 200, 400, 400, 400]) {
            let n = Duration::from_millis(nominal);
            assert!(*d >= n / 2 && *d <= n, "{d:?} outside [{:?}, {n:?}]", n / 2);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_only() {
        let shutdown = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let r: Result<u32, E> = retry(&shutdown, "test", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < 3 {
                Err(E(true))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        calls.store(0, Ordering::SeqCst);
        let r: Result<u32, E> = retry(&shutdown, "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(E(false))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "fatal errors are not retried"
        );
    }
}
