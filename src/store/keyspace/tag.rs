//! What an engine operation was for: every operation a poller queues
//! carries a tag, and its completion comes back with it.

/// The job of one engine operation, encoded into the engine's `u64` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// A client's read, in the poller's read slot.
    Read(u32),
    /// A write of commit `commit` (low 8 bits of its number) to segment
    /// `segment`; `erase` when it zeroes the segment's header.
    Write {
        commit: u8,
        segment: u32,
        erase: bool,
    },
    /// The flush that makes commit `commit` durable.
    Flush { commit: u8 },
    /// Compaction's read of its victim, segment `segment`.
    CompactRead { segment: u32 },
    /// A read of key iteration (SCAN, KEYS, RANDOMKEY), in the poller's
    /// read slot.
    ScanRead(u32),
    /// A read of the record of a key that expired or was evicted, for its
    /// name (`keyspace/gone.rs`).
    GoneRead(u32),
}

const KIND: u32 = 40;
const COMMIT: u32 = 32;
const ERASE: u64 = 1 << 44;
const READ: u64 = 0;
const WRITE: u64 = 1;
const FLUSH: u64 = 2;
const COMPACT: u64 = 3;
const SCAN: u64 = 4;
const GONE: u64 = 5;

impl Tag {
    pub fn encode(self) -> u64 {
        match self {
            Tag::Read(slot) => READ << KIND | slot as u64,
            Tag::Write {
                commit,
                segment,
                erase,
            } => {
                let erase = if erase { ERASE } else { 0 };
                WRITE << KIND | erase | (commit as u64) << COMMIT | segment as u64
            }
            Tag::Flush { commit } => FLUSH << KIND | (commit as u64) << COMMIT,
            Tag::CompactRead { segment } => COMPACT << KIND | segment as u64,
            Tag::ScanRead(slot) => SCAN << KIND | slot as u64,
            Tag::GoneRead(id) => GONE << KIND | id as u64,
        }
    }

    /// The tag `encode` made; `None` for a number it cannot have made.
    pub fn decode(tag: u64) -> Option<Tag> {
        let low = tag as u32;
        let commit = (tag >> COMMIT) as u8;
        Some(match (tag >> KIND) & 0xF {
            READ => Tag::Read(low),
            WRITE => Tag::Write {
                commit,
                segment: low,
                erase: tag & ERASE != 0,
            },
            FLUSH => Tag::Flush { commit },
            COMPACT => Tag::CompactRead { segment: low },
            SCAN => Tag::ScanRead(low),
            GONE => Tag::GoneRead(low),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Tag;

    #[test]
    fn every_tag_decodes_to_itself() {
        let tags = [
            Tag::Read(0),
            Tag::Read(u32::MAX),
            Tag::Write {
                commit: 255,
                segment: u32::MAX,
                erase: true,
            },
            Tag::Write {
                commit: 0,
                segment: 7,
                erase: false,
            },
            Tag::Flush { commit: 9 },
            Tag::CompactRead { segment: 12345 },
            Tag::ScanRead(u32::MAX),
            Tag::GoneRead(u32::MAX),
        ];
        for t in tags {
            assert_eq!(Tag::decode(t.encode()), Some(t), "{t:?}");
        }
        assert_eq!(Tag::decode(9 << 40), None);
    }
}
