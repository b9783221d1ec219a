//! nvkv: a key-value store for NVMe SSDs.
//!
//! Layers, from the network down to the device: [`server`] (accept thread,
//! connection threads, RESP) → rings → pollers owning [`store`] shards
//! (index, log) → [`io`] engines (io_uring, Linux AIO, SPDK).

pub mod bench;
pub mod config;
pub mod format;
pub mod index;
pub mod io;
pub mod keys;
pub mod server;
pub mod store;
