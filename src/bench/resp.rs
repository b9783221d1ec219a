//! The bench client's side of RESP: its two requests, GET and SET. Replies
//! are read by the crate's codec ([`crate::resp::parse_reply`]).

pub use crate::resp::{parse_reply as parse, ProtocolError, Reply};

/// Appends `GET key` to `out`.
pub fn encode_get(out: &mut Vec<u8>, key: &[u8]) {
    crate::resp::encode::command(out, &[b"GET", key]);
}

/// Appends `SET key value` to `out`.
pub fn encode_set(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    crate::resp::encode::command(out, &[b"SET", key, value]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_get(&mut out, b"k:0:1");
        encode_set(&mut out, b"k", &[b'x'; 12]);
        assert_eq!(
            out,
            b"*2\r\n$3\r\nGET\r\n$5\r\nk:0:1\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$12\r\nxxxxxxxxxxxx\r\n"
        );
    }
}
