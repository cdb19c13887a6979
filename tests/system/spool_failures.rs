//! The spool under damage and a full disk, end to end: whatever happened to `spool.redb`, the
//! gateway starts, collects, keeps the damaged file aside and tells the technician through a
//! device-fault alert that lands in the store (issue 10 items 6–7, issue 14 items 2 and 4).

use std::path::Path;
use std::time::Duration;

use anju_system::{landed, start_gateway, wait_until, VictoriaMetrics};
use anyhow::{ensure, Context, Result};
use firmware_sim::{Scenario, Site, StartOptions};

use crate::modbus_to_influx::gateway_config;

/// How the file is damaged before the start.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut to zero bytes.
    Empty,
    /// Cut to half its length.
    Truncated,
    /// 4 KiB of noise from this seed written in the middle.
    Overwritten(u64),
}

fn damage(path: &Path, how: Damage) -> Result<()> {
    let mut bytes = std::fs::read(path)?;
    match how {
        Damage::Empty => bytes.clear(),
        Damage::Truncated => bytes.truncate(bytes.len() / 2),
        Damage::Overwritten(seed) => {
            let mut x = seed.max(1);
            let at = bytes.len() / 2;
            let end = (at + 4096).min(bytes.len());
            for b in &mut bytes[at..end] {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x.to_le_bytes()[0];
            }
        }
    }
    std::fs::write(path, &bytes)?;
    Ok(())
}

fn wall_ms() -> i64 {
    anju_gateway::model::now_ns() / 1_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spool_at_start_keeps_the_gateway_collecting_and_raises_an_alert() -> Result<()> {
    anju_system::init_tracing();
    let mut vm = VictoriaMetrics::start()?;
    let scenario = Scenario::load(&anju_system::repo_root().join("config/sim/basic.toml"))?;
    let pty_dir = tempfile::tempdir()?;
    let site = Site::start(
        &scenario,
        StartOptions {
            pty_dir: Some(pty_dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await?;
    for how in [
        Damage::Empty,
        Damage::Truncated,
        Damage::Overwritten(42),
        Damage::Overwritten(0xdead_beef),
    ] {
        let dir = tempfile::tempdir()?;
        let config = gateway_config(&site, &vm.url(), dir.path())?;
        let spool = dir.path().join("spool.redb");
        // A backlog on disk: the store is away while the gateway collects.
        vm.stop();
        let gw = start_gateway(&config, dir.path())?;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        gw.stop().await?;
        damage(&spool, how)?;
        vm.restart()?;

        let started_ms = wall_ms();
        let gw = start_gateway(&config, dir.path())?;
        // Collecting within seconds: readings taken after this start land.
        wait_until(
            Duration::from_secs(20),
            &format!("{how:?}: readings after the start in the store"),
            || async {
                vm.export("level_value")
                    .await
                    .map(|s| {
                        landed(&s)
                            .values()
                            .any(|per| per.keys().next_back().is_some_and(|t| *t > started_ms))
                    })
                    .unwrap_or(false)
            },
        )
        .await?;
        ensure!(gw.is_running(), "{how:?}: the gateway stopped");
        let aside: Vec<_> = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("spool.redb.damaged-"))
            .collect();
        // An overwrite of pages no table uses is harmless and not reported; the others are.
        let must_detect = !matches!(how, Damage::Overwritten(_));
        ensure!(
            !must_detect || aside.len() == 1,
            "{how:?}: damaged file kept aside: {aside:?}"
        );
        if !aside.is_empty() {
            // The device-fault alert lands as an `alerts` point of rule spool_damaged.
            wait_until(
                Duration::from_secs(20),
                &format!("{how:?}: the spool_damaged alert in the store"),
                || async {
                    vm.export("alerts_level")
                        .await
                        .map(|s| {
                            s.iter().any(|x| {
                                x.metric.get("rule").map(String::as_str) == Some("spool_damaged")
                                    && x.metric.get("kind").map(String::as_str)
                                        == Some("device_fault")
                                    && x.timestamps.iter().any(|t| *t >= started_ms - 1000)
                            })
                        })
                        .unwrap_or(false)
                },
            )
            .await
            .context("alert")?;
        }
        gw.stop().await?;
    }
    site.shutdown().await;
    Ok(())
}
