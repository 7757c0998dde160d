//! Progress on the terminal: an overall bar plus one line per running stage (indicatif) on a
//! TTY, plain lines otherwise. The only module that knows about terminals.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pipeline_cache::{StageOutcome, StageRecord};

use crate::run::RunObserver;
use crate::stage::Reporter;

pub struct Progress {
    total: usize,
    finished: AtomicUsize,
    tty: Option<TtyBars>,
    /// Rows out per stage, for the summary table.
    pub rows: Mutex<HashMap<String, u64>>,
}

struct TtyBars {
    multi: MultiProgress,
    overall: ProgressBar,
    stages: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress {
    pub fn new(total: usize, plain: bool) -> Progress {
        let tty = if !plain && std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(total as u64));
            overall.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} stages {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            overall.enable_steady_tick(Duration::from_millis(120));
            Some(TtyBars { multi, overall, stages: Mutex::new(HashMap::new()) })
        } else {
            None
        };
        Progress { total, finished: AtomicUsize::new(0), tty, rows: Mutex::new(HashMap::new()) }
    }

    fn line(&self, text: &str) {
        match &self.tty {
            Some(bars) => bars.multi.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bars) = &self.tty {
            bars.overall.finish_and_clear();
        }
    }
}

impl Reporter for Progress {
    fn stage_progress(&self, stage: &str, done: u64, total: Option<u64>) {
        if let Some(bars) = &self.tty
            && let Some(bar) = bars.stages.lock().ok().and_then(|m| m.get(stage).cloned())
        {
            if let Some(total) = total {
                bar.set_length(total);
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix:24} {bar:20} {pos}/{len} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            }
            bar.set_position(done);
        }
    }

    fn stage_message(&self, stage: &str, message: &str) {
        match &self.tty {
            Some(bars) => {
                if let Some(bar) = bars.stages.lock().ok().and_then(|m| m.get(stage).cloned()) {
                    bar.set_message(message.to_string());
                }
            }
            None => eprintln!("       {stage}: {message}"),
        }
    }
}

impl RunObserver for Progress {
    fn stage_started(&self, stage: &str) {
        match &self.tty {
            Some(bars) => {
                let bar = bars.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix:24} {elapsed} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(stage.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                if let Ok(mut map) = bars.stages.lock() {
                    map.insert(stage.to_string(), bar);
                }
            }
            None => eprintln!(
                "[{:>w$}/{}] start   {stage}",
                self.finished.load(Ordering::Relaxed),
                self.total,
                w = digits(self.total)
            ),
        }
    }

    fn stage_finished(&self, record: &StageRecord, rows: Option<u64>) {
        let done = self.finished.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(rows) = rows
            && let Ok(mut map) = self.rows.lock()
        {
            map.insert(record.name.clone(), rows);
        }
        if let Some(bars) = &self.tty {
            if let Some(bar) = bars.stages.lock().ok().and_then(|mut m| m.remove(&record.name)) {
                bar.finish_and_clear();
                bars.multi.remove(&bar);
            }
            bars.overall.set_position(done as u64);
        }
        let time = if record.outcome == StageOutcome::Ran || record.outcome == StageOutcome::Failed {
            format!("{:.2}s", record.duration_ms as f64 / 1000.0)
        } else {
            String::new()
        };
        let mut line = format!(
            "[{done:>w$}/{}] {:<7} {} {time}",
            self.total,
            record.outcome.as_str(),
            record.name,
            w = digits(self.total)
        );
        if let Some(rows) = rows {
            line.push_str(&format!(" ({rows} rows)"));
        }
        if let Some(error) = &record.error {
            if record.outcome == StageOutcome::Failed {
                line.push_str(&format!("\nerror: stage `{}` failed: {}", record.name, indent_rest(error)));
            } else {
                line.push_str(&format!(" ({error})"));
            }
        }
        self.line(line.trim_end());
    }

    fn note(&self, message: &str) {
        self.line(message);
    }
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

fn indent_rest(text: &str) -> String {
    text.lines().collect::<Vec<_>>().join("\n  ")
}
