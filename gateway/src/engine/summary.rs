//! The engine's periodic summary: one human line with what flowed since the last one and what
//! waits in the spool, e.g.
//! `Summary of the last 60s: 1200 readings (3 flagged), 42 channels; spool 1.2 MiB on disk, backlog 120 records (central 120, bureau 0), 0 dead letters; latest: a=1.2mm`.
//!
//! Owns the wording only; the engine gathers the numbers and logs the line.

use std::fmt::Write as _;
use std::time::Duration;

use crate::spool::SpoolStats;

/// What the engine counted since the last summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flow {
    /// The summary period.
    pub interval: Duration,
    /// Readings received.
    pub readings: u64,
    /// Of them, with a quality other than good.
    pub flagged: u64,
    /// Channels held in memory now.
    pub channels: usize,
}

/// The summary line for `flow`, the spool's counts (`None`: they could not be read) and a
/// sample of the latest values (`key=value unit`).
pub(crate) fn summary_line(flow: Flow, spool: Option<&SpoolStats>, latest: &[String]) -> String {
    let mut line = format!(
        "Summary of the last {}: {} readings ({} flagged), {} channels",
        humantime::format_duration(flow.interval),
        flow.readings,
        flow.flagged,
        flow.channels
    );
    match spool {
        None => line.push_str("; spool counts unavailable"),
        Some(s) => {
            let state = if s.available { "" } else { " NOT WRITABLE," };
            let backlog: u64 = s
                .sinks
                .values()
                .map(|b| b.points_records + b.alerts_records)
                .sum();
            let _ = write!(
                line,
                "; spool{state} {} on disk, backlog {backlog} records",
                human_bytes(s.file_bytes)
            );
            if !s.sinks.is_empty() {
                let per_sink: Vec<String> = s
                    .sinks
                    .iter()
                    .map(|(name, b)| format!("{name} {}", b.points_records + b.alerts_records))
                    .collect();
                let _ = write!(line, " ({})", per_sink.join(", "));
            }
            let _ = write!(line, ", {} dead letters", s.dead_letter_count);
        }
    }
    if !latest.is_empty() {
        let _ = write!(line, "; latest: {}", latest.join(", "));
    }
    line
}

/// `bytes` in B, KiB, MiB or GiB with one decimal.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::SinkBacklog;

    #[test]
    fn summary_is_one_human_line_with_counts_and_backlog() {
        let mut spool = SpoolStats {
            available: true,
            file_bytes: 1_258_291,
            dead_letter_count: 2,
            ..SpoolStats::default()
        };
        spool.sinks.insert(
            "central".into(),
            SinkBacklog {
                points_records: 120,
                alerts_records: 0,
            },
        );
        spool.sinks.insert("bureau".into(), SinkBacklog::default());
        let flow = Flow {
            interval: Duration::from_secs(60),
            readings: 1200,
            flagged: 3,
            channels: 42,
        };
        let line = summary_line(flow, Some(&spool), &["a=1.2mm".to_owned()]);
        assert_eq!(
            line,
            "Summary of the last 1m: 1200 readings (3 flagged), 42 channels; spool 1.2 MiB on disk, \
             backlog 120 records (bureau 0, central 120), 2 dead letters; latest: a=1.2mm"
        );
        assert!(!line.contains('\n') && !line.contains('{'));
        spool.available = false;
        let line = summary_line(flow, Some(&spool), &[]);
        assert!(
            line.contains("; spool NOT WRITABLE, 1.2 MiB on disk"),
            "{line}"
        );
        assert!(summary_line(flow, None, &[]).ends_with("; spool counts unavailable"));
        assert_eq!(human_bytes(512), "512 B");
    }
}
