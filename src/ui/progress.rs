//! Pull progress: a bar per layer on a terminal (indicatif), plain lines otherwise, nothing
//! with `--quiet`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::human_bytes;

pub enum PullProgress {
    Bars(MultiProgress),
    Lines(Mutex<()>),
    Quiet,
}

pub enum LayerProgress {
    Bar(ProgressBar),
    Line { short: String, size: u64 },
    Quiet,
}

impl PullProgress {
    pub fn new(quiet: bool) -> Self {
        if quiet {
            PullProgress::Quiet
        } else if std::io::stderr().is_terminal() {
            PullProgress::Bars(MultiProgress::with_draw_target(
                ProgressDrawTarget::stderr_with_hz(10),
            ))
        } else {
            PullProgress::Lines(Mutex::new(()))
        }
    }

    pub fn message(&self, msg: &str) {
        match self {
            PullProgress::Bars(m) => {
                let _ = m.println(msg);
            }
            PullProgress::Lines(lock) => {
                let _g = lock.lock();
                super::print::note(msg);
            }
            PullProgress::Quiet => {}
        }
    }

    pub fn layer(&self, short: &str, size: u64) -> LayerProgress {
        self.transfer(short, size, "downloading")
    }

    /// A bar for a layer being sent (`dev push`).
    pub fn upload(&self, short: &str, size: u64) -> LayerProgress {
        self.transfer(short, size, "uploading")
    }

    fn transfer(&self, short: &str, size: u64, verb: &str) -> LayerProgress {
        match self {
            PullProgress::Bars(m) => {
                let bar = m.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template("{prefix:.bold} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(short.to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
                LayerProgress::Bar(bar)
            }
            PullProgress::Lines(_) => {
                super::print::note(format!("{short}: {verb} {}", human_bytes(size)));
                LayerProgress::Line {
                    short: short.to_string(),
                    size,
                }
            }
            PullProgress::Quiet => LayerProgress::Quiet,
        }
    }
}

impl LayerProgress {
    pub fn set(&self, done: u64) {
        if let LayerProgress::Bar(b) = self {
            b.set_position(done);
        }
    }

    pub fn phase(&self, what: &str) {
        match self {
            LayerProgress::Bar(b) => b.set_message(what.to_string()),
            LayerProgress::Line { short, .. } => super::print::note(format!("{short}: {what}")),
            LayerProgress::Quiet => {}
        }
    }

    pub fn finish(&self, what: &str) {
        match self {
            LayerProgress::Bar(b) => b.finish_with_message(what.to_string()),
            LayerProgress::Line { short, size } => {
                super::print::note(format!("{short}: {what} ({})", human_bytes(*size)))
            }
            LayerProgress::Quiet => {}
        }
    }
}
