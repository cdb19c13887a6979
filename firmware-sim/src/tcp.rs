//! Modbus TCP transport of one simulated slave, on tokio-modbus's server.
//!
//! Owns the mapping of tokio-modbus requests onto [`ModbusDevice::read`] and
//! [`ModbusDevice::write`] (FC 05, 06, 16) and the unit-id and
//! offline rules: an offline device accepts connections but never answers (a hung device behind
//! a live network); a request for another unit id gets exception 0B; a `slow` fault holds the
//! reply back (the answer is computed when the request arrives, so it carries the sample of
//! that moment). It does not hold values.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use crate::device::{Exception, ModbusDevice};
use crate::profile::Function;

/// Modbus/TCP (Modbus Messaging on TCP/IP V1.0b §4.4.2): a device addressed directly takes
/// unit id 0xFF; many also take 0. Both reach the device besides its configured id.
const DIRECT_UNIT_IDS: [u8; 2] = [0x00, 0xFF];

impl From<Exception> for ExceptionCode {
    fn from(e: Exception) -> Self {
        match e {
            Exception::IllegalFunction => Self::IllegalFunction,
            Exception::IllegalDataAddress => Self::IllegalDataAddress,
            Exception::IllegalDataValue => Self::IllegalDataValue,
            Exception::ServerDeviceFailure => Self::ServerDeviceFailure,
            Exception::ServerDeviceBusy => Self::ServerDeviceBusy,
            Exception::GatewayTargetFailed => Self::GatewayTargetDevice,
        }
    }
}

/// The tokio-modbus service of one device.
#[derive(Debug, Clone)]
struct DeviceService {
    device: Arc<ModbusDevice>,
}

type Answer = Result<Option<Response>, ExceptionCode>;

impl DeviceService {
    fn answer(&self, req: &SlaveRequest<'static>) -> Answer {
        if !self.device.is_online() {
            return Ok(None);
        }
        if req.slave != self.device.unit() && !DIRECT_UNIT_IDS.contains(&req.slave) {
            return Err(Exception::GatewayTargetFailed.into());
        }
        let bits = |v: Vec<u16>| v.into_iter().map(|b| b != 0).collect::<Vec<bool>>();
        let d = &self.device;
        let response = match req.request {
            Request::ReadCoils(a, n) => Response::ReadCoils(bits(d.read(Function::Coil, a, n)?)),
            Request::ReadDiscreteInputs(a, n) => {
                Response::ReadDiscreteInputs(bits(d.read(Function::Discrete, a, n)?))
            }
            Request::ReadHoldingRegisters(a, n) => {
                Response::ReadHoldingRegisters(d.read(Function::Holding, a, n)?)
            }
            Request::ReadInputRegisters(a, n) => {
                Response::ReadInputRegisters(d.read(Function::Input, a, n)?)
            }
            // V1.1b3 §6.5: the reply echoes address and state.
            Request::WriteSingleCoil(a, on) => {
                d.write(Function::Coil, a, &[u16::from(on)])?;
                Response::WriteSingleCoil(a, on)
            }
            // §6.6: the reply echoes address and value.
            Request::WriteSingleRegister(a, v) => {
                d.write(Function::Holding, a, &[v])?;
                Response::WriteSingleRegister(a, v)
            }
            // §6.12: the reply echoes address and quantity.
            Request::WriteMultipleRegisters(a, ref words) => {
                d.write(Function::Holding, a, words)?;
                Response::WriteMultipleRegisters(a, u16::try_from(words.len()).unwrap_or(u16::MAX))
            }
            _ => return Err(Exception::IllegalFunction.into()),
        };
        Ok(Some(response))
    }
}

impl Service for DeviceService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let answer = self.answer(&req);
        let delay = self.device.line_faults().delay;
        Box::pin(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            answer
        })
    }
}

/// Binds the listener of a slave.
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `device` on `listener` until the future is dropped (which also closes every
/// connection: tokio-modbus cancels connection tasks when `serve` is dropped).
pub async fn serve(listener: TcpListener, device: Arc<ModbusDevice>) {
    let name = device.name().to_owned();
    let service = DeviceService { device };
    let on_connected = move |stream, addr| {
        let service = service.clone();
        async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(service.clone()))) }
    };
    let err_name = name.clone();
    let on_error = move |e: io::Error| {
        tracing::debug!(device = %err_name, error = %e, "modbus tcp connection ended with an error");
    };
    if let Err(e) = Server::new(listener).serve(&on_connected, on_error).await {
        tracing::error!(device = %name, error = %e, "modbus tcp listener failed");
    }
}
