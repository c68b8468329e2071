//! A determinate progress bar on stderr: redrawn in place on a terminal, a line per quarter
//! otherwise (so logs stay readable).

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Bar {
    label: &'static str,
    start: Instant,
    last: Option<Instant>,
    quarter: u64,
    tty: bool,
    drawn: bool,
    started: bool,
}

impl Bar {
    pub fn new(label: &'static str) -> Bar {
        Bar {
            label,
            start: Instant::now(),
            last: None,
            quarter: 0,
            tty: std::io::stderr().is_terminal(),
            drawn: false,
            started: false,
        }
    }

    /// `done` of `total` bytes (`total` 0: unknown).
    pub fn update(&mut self, done: u64, total: u64) {
        let now = Instant::now();
        if !self.started {
            self.started = true;
            self.start = now;
        }
        let rate = done as f64
            / (1024.0 * 1024.0)
            / now.duration_since(self.start).as_secs_f64().max(1e-6);
        let mib = done as f64 / (1024.0 * 1024.0);
        if self.tty {
            if self
                .last
                .is_some_and(|t| now.duration_since(t).as_millis() < 100)
                && done < total
            {
                return;
            }
            self.last = Some(now);
            let line = if total > 0 {
                let frac = (done as f64 / total as f64).min(1.0);
                let filled = (frac * 30.0) as usize;
                format!(
                    "\r{} [{}{}] {:>5.1}% {:>8.1} MiB {:>7.1} MiB/s",
                    self.label,
                    "#".repeat(filled),
                    ".".repeat(30 - filled),
                    frac * 100.0,
                    mib,
                    rate
                )
            } else {
                format!("\r{} {:>8.1} MiB {:>7.1} MiB/s", self.label, mib, rate)
            };
            let mut e = std::io::stderr();
            let _ = e.write_all(line.as_bytes());
            let _ = e.flush();
            self.drawn = true;
        } else if let Some(q) = done.saturating_mul(4).checked_div(total) {
            if q > self.quarter {
                self.quarter = q;
                eprintln!(
                    "{}: {}% ({:.1} MiB, {:.1} MiB/s)",
                    self.label,
                    q * 25,
                    mib,
                    rate
                );
            }
        }
    }

    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}
