//! Copy progress on a terminal: a live bar per table (rows, rows/s,
//! percent and ETA from the source's estimate), with log lines printed
//! above the bars instead of through them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::TableName;
use crate::pipeline::{LogView, ProgressView, TableProgress};

const BAR_INTERVAL: Duration = Duration::from_millis(250);

static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Bars when stderr is a terminal, log lines otherwise.
pub fn view() -> std::sync::Arc<dyn ProgressView> {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        std::sync::Arc::new(BarsView::default())
    } else {
        std::sync::Arc::new(LogView)
    }
}

/// Log output that does not tear the bars: each line is written with the
/// bars hidden for a moment.
pub struct LogWriter(Vec<u8>);

impl LogWriter {
    pub fn make() -> LogWriter {
        LogWriter(Vec::new())
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let out = || {
            let _ = std::io::stderr().write_all(&self.0);
        };
        match BARS.get() {
            Some(bars) => bars.suspend(out),
            None => out(),
        }
    }
}

#[derive(Default)]
struct BarsView {
    bars: Mutex<HashMap<TableName, ProgressBar>>,
}

impl ProgressView for BarsView {
    fn show(&self, tables: &[TableProgress]) {
        let multi =
            BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        for t in tables {
            let bar = bars.entry(t.table.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(t.estimated_rows.unwrap_or(0)));
                let style = ProgressStyle::with_template(
                    "{prefix:>24} [{bar:30}] {pos:>12}/{len:<12} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(t.table.to_string());
                bar
            });
            if let Some(e) = t.estimated_rows {
                // Estimates can be low: never let the bar overflow.
                bar.set_length(e.max(t.rows));
            }
            bar.set_position(t.rows);
            let eta = t
                .eta()
                .map(|(pct, left)| format!(" {pct:.0}% eta {:.0}s", left.as_secs_f64()))
                .unwrap_or_default();
            bar.set_message(format!(
                "{:.0} rows/s, units {}/{}{eta}",
                t.rate(),
                t.units_done,
                t.units
            ));
            if t.finished && !bar.is_finished() {
                bar.finish_with_message(format!("done, {:.0} rows/s", t.rate()));
            }
        }
    }

    fn interval(&self) -> Duration {
        BAR_INTERVAL
    }
}
