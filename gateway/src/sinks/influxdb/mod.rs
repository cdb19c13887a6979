//! stub
pub mod line;
