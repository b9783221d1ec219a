//! What a replica says on its client connection before PSYNC: the
//! connection keeps it (`Conn::repl`) until the connection is handed over
//! to a thread of its own (`primary.rs`).

/// What a replica said before PSYNC (REPLCONF), and its PSYNC.
#[derive(Debug, Default)]
pub(in crate::server) struct Hello {
    /// `REPLCONF listening-port`.
    pub(super) port: u16,
    /// `REPLCONF ip-address`.
    pub(super) ip: Option<String>,
    /// `REPLCONF capa`: it speaks nvkv's stream.
    pub(super) nvkv: bool,
    /// `REPLCONF capa`: it takes a full copy's key count
    /// (`REPLCONF COPY-KEYS n` before the copy's first key).
    pub(super) copy_keys: bool,
    /// `REPLCONF capa`: another version of nvkv's stream.
    pub(super) other_stream: Option<Vec<u8>>,
    /// PSYNC's stream id and offset (of the first byte it wants).
    pub(super) psync: Option<(String, i64)>,
}

impl Hello {
    /// PSYNC came: the connection is handed over once its replies are out.
    pub(in crate::server) fn ready(&self) -> bool {
        self.psync.is_some()
    }
}
