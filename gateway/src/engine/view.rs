//! What the engine shows the site console: every channel's latest reading and every active
//! alert, published as one immutable snapshot ([`SiteView`]) at most every [`VIEW_INTERVAL`].
//!
//! Owns the snapshot's shape and its publication through a `tokio::sync::watch` channel: the
//! console's pages read the latest snapshot without ever locking the engine, and a page request
//! costs the engine nothing. It does not own rendering (`crate::console::pages`) or the values
//! themselves (the engine's channel map and the evaluator's active alerts).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::alert::Alert;
use crate::model::TimestampNs;

/// Longest time between two snapshots while readings or alerts change. A page refreshed every
/// few seconds shows values at most this much older than the engine's.
pub const VIEW_INTERVAL: Duration = Duration::from_secs(2);

/// One channel as the console shows it: the engine's own record of it, cloned (its series
/// shared, not copied).
pub use super::ChannelState as ChannelView;

/// Everything the console's overview shows of the engine, at one moment.
#[derive(Debug, Clone, Default)]
pub struct SiteView {
    /// Gateway time of the snapshot; 0 before the first one.
    pub at_ns: TimestampNs,
    /// Every channel held in memory, by key.
    pub channels: Vec<ChannelView>,
    /// The latest event of every active alert, highest level first.
    pub alerts: Vec<Alert>,
}

/// The engine's end of the view channel.
pub type ViewTx = watch::Sender<Arc<SiteView>>;
/// The console's end of the view channel.
pub type ViewRx = watch::Receiver<Arc<SiteView>>;

/// A view channel holding an empty view until the engine's first snapshot.
#[must_use]
pub fn channel() -> (ViewTx, ViewRx) {
    watch::channel(Arc::new(SiteView::default()))
}

impl SiteView {
    /// A snapshot of `channels` (any order; sorted by key here) and `alerts`.
    #[must_use]
    pub fn new<'a>(
        at_ns: TimestampNs,
        channels: impl Iterator<Item = ChannelView>,
        alerts: impl Iterator<Item = &'a Alert>,
    ) -> Self {
        let mut channels: Vec<ChannelView> = channels.collect();
        channels.sort_by(|a, b| a.series.key.cmp(&b.series.key));
        let mut alerts: Vec<Alert> = alerts.cloned().collect();
        alerts.sort_by(|a, b| {
            b.level
                .cmp(&a.level)
                .then(a.started_at.cmp(&b.started_at))
                .then(a.id.cmp(&b.id))
        });
        Self {
            at_ns,
            channels,
            alerts,
        }
    }

    /// The channels grouped by device, devices in key order.
    #[must_use]
    pub fn by_device(&self) -> Vec<(&str, Vec<&ChannelView>)> {
        let mut out: Vec<(&str, Vec<&ChannelView>)> = Vec::new();
        for c in &self.channels {
            match out.last_mut() {
                Some((device, list)) if *device == c.series.device => list.push(c),
                _ => out.push((c.series.device.as_str(), vec![c])),
            }
        }
        // Keys are `device/point`, so one device's channels are adjacent unless a device name
        // contains '/': merge those.
        out.sort_by(|a, b| a.0.cmp(b.0));
        out.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                earlier.1.append(&mut later.1);
                true
            } else {
                false
            }
        });
        out
    }
}
