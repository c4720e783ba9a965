//! What this process knows about itself right now, for `/readyz` and the
//! lag gauge: set by the pipeline and the app's monitor, read by the
//! metrics listener. Process-wide, like the metrics recorder.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metrics as m;

pub struct Live {
    streaming: AtomicBool,
    /// The sink's last write failed with a transient error (being retried).
    sink_failing: AtomicBool,
    /// The monitor's last probe of the sink failed.
    sink_unreachable: AtomicBool,
    fatal: Mutex<Option<String>>,
    /// Unix microseconds up to which the source's changes are durable; 0: none yet.
    source_time: AtomicI64,
}

static LIVE: Live = Live {
    streaming: AtomicBool::new(false),
    sink_failing: AtomicBool::new(false),
    sink_unreachable: AtomicBool::new(false),
    fatal: Mutex::new(None),
    source_time: AtomicI64::new(0),
};

pub fn live() -> &'static Live {
    &LIVE
}

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Live {
    pub fn set_streaming(&self, on: bool) {
        self.streaming.store(on, Ordering::Relaxed);
    }

    pub fn set_sink_failing(&self, failing: bool) {
        self.sink_failing.store(failing, Ordering::Relaxed);
    }

    pub fn set_sink_unreachable(&self, unreachable: bool) {
        self.sink_unreachable.store(unreachable, Ordering::Relaxed);
    }

    pub fn set_fatal(&self, message: String) {
        *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
    }

    /// The source's changes up to `micros` (Unix) are durable in the sink.
    pub fn applied_up_to(&self, micros: i64) {
        let prev = self.source_time.fetch_max(micros, Ordering::Relaxed);
        if micros > prev {
            metrics::gauge!(m::LAST_COMMIT_TIME).set(micros as f64 / 1e6);
        }
    }

    /// Seconds since the last applied change's commit; `None` before any.
    pub fn lag_seconds(&self) -> Option<f64> {
        let t = self.source_time.load(Ordering::Relaxed);
        (t > 0).then(|| ((now_micros() - t) as f64 / 1e6).max(0.0))
    }

    /// Why the process is not ready; empty when it is.
    pub fn unready_reasons(&self, max_lag: Duration) -> Vec<String> {
        let mut why = Vec::new();
        if let Some(f) = self
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            why.push(format!("stopped by a fatal error: {f}"));
        }
        if !self.streaming.load(Ordering::Relaxed) {
            why.push("not streaming (starting, copying or reconnecting)".into());
        }
        if self.sink_failing.load(Ordering::Relaxed) {
            why.push("sink writes are failing and being retried".into());
        }
        if self.sink_unreachable.load(Ordering::Relaxed) {
            why.push("the sink does not answer".into());
        }
        match self.lag_seconds() {
            Some(lag) if lag > max_lag.as_secs_f64() => why.push(format!(
                "lag {lag:.1}s is over metrics.ready_max_lag ({}s)",
                max_lag.as_secs()
            )),
            _ => {}
        }
        why
    }

    /// Brings the gauges computed from the clock up to date (before a scrape).
    pub fn refresh_gauges(&self, max_lag: Duration) {
        if let Some(lag) = self.lag_seconds() {
            metrics::gauge!(m::LAG_SECONDS).set(lag);
        }
        let ready = self.unready_reasons(max_lag).is_empty();
        metrics::gauge!(m::READY).set(if ready { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Live {
        Live {
            streaming: AtomicBool::new(false),
            sink_failing: AtomicBool::new(false),
            sink_unreachable: AtomicBool::new(false),
            fatal: Mutex::new(None),
            source_time: AtomicI64::new(0),
        }
    }

    #[test]
    fn ready_only_when_streaming_healthy_and_within_the_lag_bound() {
        let l = fresh();
        let bound = Duration::from_secs(5);
        assert_eq!(l.unready_reasons(bound).len(), 1, "not streaming yet");
        l.set_streaming(true);
        assert!(l.unready_reasons(bound).is_empty(), "no lag known yet");
        l.applied_up_to(now_micros() - 10_000_000);
        let why = l.unready_reasons(bound);
        assert!(why.len() == 1 && why[0].contains("lag"), "{why:?}");
        assert!(l.unready_reasons(Duration::from_secs(60)).is_empty());
        l.applied_up_to(now_micros() - 60_000_000);
        assert!(
            l.lag_seconds().unwrap() < 11.0,
            "an older source time never moves lag back"
        );
        l.set_sink_failing(true);
        l.set_sink_unreachable(true);
        l.set_fatal("boom".into());
        assert_eq!(l.unready_reasons(Duration::from_secs(60)).len(), 3);
    }
}
