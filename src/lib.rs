//! nvkv: a key-value store for NVMe SSDs.
//!
//! Layers, from the network down to the device: [`server`] (accept thread,
//! connection threads, RESP) → rings → pollers owning [`store`] shards
//! (index, log) → [`io`] engines (io_uring, Linux AIO, SPDK). [`resp`] is
//! the protocol's codec, which the server and the bench client share.

pub mod bench;
pub mod config;
pub mod format;
pub mod index;
pub mod io;
pub mod keys;
pub mod resp;
pub mod server;
pub mod store;
