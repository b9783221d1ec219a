//! Error replies the poller sends for what the store refused.

/// No free segment for a write, and none that compaction or eviction can
/// make.
pub const STORE_FULL: &str = "OOM the store is full: no free segment for writes";
/// A write waited for compaction longer than it may.
pub const COMPACTION_BEHIND: &str = "OOM no free segment: compaction is behind";
/// Redis's refusal of a command that adds data past `maxmemory`.
pub const OVER_MAXMEMORY: &str = "OOM command not allowed when used memory > 'maxmemory'.";
/// A record that would not fit in a segment.
pub const RECORD_TOO_LARGE: &str = "ERR record larger than a segment";
