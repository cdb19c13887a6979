//! Modbus RTU over a socat pty pair: the right slave answers, absent units and offline slaves
//! stay silent, and the site's own pty pair works when the scenario names no tty.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{decode, decode_time, within, SILENCE_TIMEOUT};
use firmware_sim::profile::Function;
use firmware_sim::{ClockMode, PtyPair, RunningSite, Scenario, Site, StartOptions};
use tokio_modbus::client::{rtu, Context};
use tokio_modbus::prelude::*;
use tokio_serial::SerialPortBuilderExt;

/// Time for a late reply to arrive before a port is reopened (docs/ARCHITECTURE.md §Crate pitfalls:
/// RTU has no transaction id, so a stale reply would be taken as the next answer).
const SETTLE: Duration = Duration::from_millis(50);

fn basic() -> Scenario {
    Scenario::load(&common::repo().join("config/sim/basic.toml")).expect("basic.toml loads")
}

fn open(path: &Path, unit: u8) -> Context {
    let port = tokio_serial::new(path.to_string_lossy(), 9600)
        .open_native_async()
        .expect("open gateway side");
    rtu::attach_slave(port, Slave(unit))
}

/// Reads every register point of `device` (on unit `unit`) and compares with the truth.
async fn check_device(s: &Scenario, site: &RunningSite, ctx: &mut Context, device: &str) {
    let slave = s.modbus_rtu[0]
        .slaves
        .iter()
        .find(|d| d.name == device)
        .expect("slave");
    ctx.set_slave(Slave(slave.unit));
    let last = site.last_sample();
    for p in &slave.profile.points {
        let what = format!("{device} {}", p.name);
        let regs: Vec<u16> = match p.function {
            Function::Holding => {
                within(&what, ctx.read_holding_registers(p.address, p.width())).await
            }
            Function::Input => within(&what, ctx.read_input_registers(p.address, p.width())).await,
            Function::Coil => within(&what, ctx.read_coils(p.address, 1))
                .await
                .map(|r| r.map(|b| b.into_iter().map(u16::from).collect())),
            Function::Discrete => within(&what, ctx.read_discrete_inputs(p.address, 1))
                .await
                .map(|r| r.map(|b| b.into_iter().map(u16::from).collect())),
        }
        .expect("transport")
        .expect("no exception");
        if let Some((t, order)) = p.time {
            let t = within(&what, ctx.read_holding_or_input(p.function, t)).await;
            assert_eq!(decode_time(&t, order), last.unix_s, "{what}: sample time");
        }
        let expected = site
            .truth()
            .value_at(device, &p.name, last.unix_s * 1_000_000_000)
            .expect("truth");
        assert_eq!(decode(p, &regs), expected, "{what}");
    }
}

/// Reads a 2-register time from the table of the point.
trait TimeRead {
    async fn read_holding_or_input(&mut self, f: Function, address: u16) -> Vec<u16>;
}

impl TimeRead for Context {
    async fn read_holding_or_input(&mut self, f: Function, address: u16) -> Vec<u16> {
        let r = if f == Function::Holding {
            self.read_holding_registers(address, 2).await
        } else {
            self.read_input_registers(address, 2).await
        };
        r.expect("transport").expect("no exception")
    }
}

#[tokio::test]
async fn two_units_answer_and_an_absent_unit_is_silent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = PtyPair::spawn(dir.path()).expect("socat pty pair");
    let s = basic();
    let options = StartOptions {
        clock: ClockMode::Manual,
        rtu_paths: [("rs485-1".to_owned(), pair.sim_path().to_path_buf())].into(),
        ..Default::default()
    };
    let site = Site::start(&s, options).await.expect("site starts");
    assert_eq!(
        site.rtu_endpoint("rs485-1").map(|e| e.gateway_path.clone()),
        Some(None)
    );

    let mut ctx = open(pair.gateway_path(), 1);
    for _ in 0..2 {
        check_device(&s, &site, &mut ctx, "therm-1").await;
        check_device(&s, &site, &mut ctx, "tc-2").await;
        site.step();
    }

    // Unit 9 is not on the bus: no answer at all (not even an exception).
    ctx.set_slave(Slave(9));
    let silent = tokio::time::timeout(SILENCE_TIMEOUT, ctx.read_holding_registers(0, 1)).await;
    assert!(silent.is_err(), "absent unit must stay silent: {silent:?}");
    drop(ctx);
    tokio::time::sleep(SETTLE).await;

    // The bus still serves the others afterwards.
    let mut ctx = open(pair.gateway_path(), 2);
    let r = within("tc-2 after silence", ctx.read_input_registers(0, 2)).await;
    assert!(matches!(r, Ok(Ok(ref v)) if v.len() == 2), "{r:?}");
    // Exceptions travel on RTU too: thermistor-16 has no input registers.
    ctx.set_slave(Slave(1));
    let r = within("therm-1 input", ctx.read_input_registers(0, 1)).await;
    assert_eq!(
        r.expect("transport"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    site.shutdown().await;
}

#[tokio::test]
async fn offline_rtu_slave_is_silent_until_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = PtyPair::spawn(dir.path()).expect("socat pty pair");
    let s = basic();
    let options = StartOptions {
        clock: ClockMode::Manual,
        rtu_paths: [("rs485-1".to_owned(), pair.sim_path().to_path_buf())].into(),
        ..Default::default()
    };
    let site = Site::start(&s, options).await.expect("site starts");

    site.set_online("therm-1", false).expect("known");
    let mut ctx = open(pair.gateway_path(), 1);
    let silent = tokio::time::timeout(SILENCE_TIMEOUT, ctx.read_holding_registers(0, 16)).await;
    assert!(silent.is_err(), "offline slave must stay silent");
    drop(ctx);
    tokio::time::sleep(SETTLE).await;
    // The other slave on the same bus still answers.
    let mut ctx = open(pair.gateway_path(), 2);
    assert!(matches!(
        within("tc-2", ctx.read_input_registers(0, 2)).await,
        Ok(Ok(_))
    ));

    site.set_online("therm-1", true).expect("known");
    check_device(&s, &site, &mut ctx, "therm-1").await;
    let faults = site.truth().faults();
    assert_eq!(faults.len(), 1);
    assert!(faults[0].end_ns.is_some());
    site.shutdown().await;
}

#[tokio::test]
async fn bus_without_tty_gets_its_own_pty_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = basic();
    let options = StartOptions {
        clock: ClockMode::Manual,
        pty_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let site = Site::start(&s, options).await.expect("site starts");
    let ep = site.rtu_endpoint("rs485-1").expect("bus").clone();
    let gw = ep.gateway_path.expect("own pty pair");
    assert_eq!(gw, dir.path().join("rs485-1").join("gw"));
    let mut ctx = open(&gw, 1);
    check_device(&s, &site, &mut ctx, "therm-1").await;
    drop(ctx);
    site.shutdown().await;
    assert!(!gw.exists(), "socat and its links are gone after shutdown");
}

#[test]
fn pty_pair_links_exist_and_vanish_on_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = PtyPair::spawn(dir.path()).expect("socat pty pair");
    let (sim, gw) = (
        pair.sim_path().to_path_buf(),
        pair.gateway_path().to_path_buf(),
    );
    assert!(sim.exists() && gw.exists());
    assert_eq!(sim, dir.path().join("sim"));
    drop(pair);
    assert!(!sim.exists() && !gw.exists());
}
