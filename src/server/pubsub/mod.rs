//! Pub/sub: SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE, PUBLISH and
//! PUBSUB, and sharded pub/sub (SSUBSCRIBE, SUNSUBSCRIBE, SPUBLISH, PUBSUB
//! SHARDCHANNELS and SHARDNUMSUB), as Redis 7. Shard channels are a
//! namespace of their own: SPUBLISH reaches shard subscribers only (no
//! pattern), PUBLISH never reaches them; with one server (Redis without
//! cluster mode) every shard channel is here.
//!
//! One registry for the process ([`PubSub`], in the server's shared
//! state) maps each channel and each pattern to the connections
//! subscribed to it, wherever their connection thread. PUBLISH encodes a
//! message once (per pattern that matches), puts a [`Delivery`] for each
//! subscriber in its connection thread's mailbox (`ConnHandle::published`)
//! and rings the threads it wrote to; each thread appends the messages to
//! its connections' output like any reply. The publisher never waits for a
//! subscriber: a subscriber that does not read piles up output until
//! `--max-output-buffer` disconnects it (Redis's
//! `client-output-buffer-limit pubsub`).
//!
//! A connection keeps its own subscriptions ([`Subs`]): they decide what
//! its replies count, whether it is in RESP2's subscribed mode, and
//! whether a message still in a mailbox when it unsubscribed is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::msg::ConnRef;
use super::pattern;
use crate::resp::{self, Proto};

/// What a subscription is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Channel,
    Pattern,
    Shard,
}

/// A message on its way to one subscriber.
#[derive(Debug)]
pub(super) struct Delivery {
    pub to: ConnRef,
    /// The channel, pattern or shard channel it came through.
    pub via: Arc<[u8]>,
    pub kind: Kind,
    /// The message in RESP2 (`*3` message or smessage, `*4` pmessage);
    /// RESP3's push differs only in its first byte.
    pub bytes: Arc<[u8]>,
}

/// The process's subscriptions: channel or pattern → subscribers, in the
/// order they subscribed.
#[derive(Debug, Default)]
pub(super) struct PubSub {
    reg: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    channels: HashMap<Arc<[u8]>, Vec<ConnRef>>,
    patterns: HashMap<Arc<[u8]>, Vec<ConnRef>>,
    shard: HashMap<Arc<[u8]>, Vec<ConnRef>>,
}

impl Registry {
    fn of(&mut self, kind: Kind) -> &mut HashMap<Arc<[u8]>, Vec<ConnRef>> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard,
        }
    }
}

impl PubSub {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers `message` on `channel` to every subscriber, through
    /// `post` (which queues it for the subscriber's thread); returns how
    /// many received it, as PUBLISH answers (a client subscribed to the
    /// channel and to a matching pattern counts twice, as in Redis).
    pub(super) fn publish(
        &self,
        channel: &[u8],
        message: &[u8],
        mut post: impl FnMut(Delivery),
    ) -> usize {
        let reg = self.lock();
        let mut n = 0;
        if let Some((name, subs)) = reg.channels.get_key_value(channel) {
            let bytes: Arc<[u8]> = encode(b"message", None, channel, message).into();
            for &to in subs {
                post(Delivery {
                    to,
                    via: Arc::clone(name),
                    kind: Kind::Channel,
                    bytes: Arc::clone(&bytes),
                });
                n += 1;
            }
        }
        for (pat, subs) in &reg.patterns {
            if !pattern::glob_exact(pat, channel) {
                continue;
            }
            let bytes: Arc<[u8]> = encode(b"pmessage", Some(pat), channel, message).into();
            for &to in subs {
                post(Delivery {
                    to,
                    via: Arc::clone(pat),
                    kind: Kind::Pattern,
                    bytes: Arc::clone(&bytes),
                });
                n += 1;
            }
        }
        n
    }

    /// SPUBLISH: delivers `message` to the subscribers of the shard
    /// channel `channel` (patterns never match shard channels); returns
    /// how many received it.
    pub(super) fn spublish(
        &self,
        channel: &[u8],
        message: &[u8],
        mut post: impl FnMut(Delivery),
    ) -> usize {
        let reg = self.lock();
        let Some((name, subs)) = reg.shard.get_key_value(channel) else {
            return 0;
        };
        let bytes: Arc<[u8]> = encode(b"smessage", None, channel, message).into();
        for &to in subs {
            post(Delivery {
                to,
                via: Arc::clone(name),
                kind: Kind::Shard,
                bytes: Arc::clone(&bytes),
            });
        }
        subs.len()
    }

    fn add(&self, name: &Arc<[u8]>, kind: Kind, who: ConnRef) {
        self.lock()
            .of(kind)
            .entry(Arc::clone(name))
            .or_default()
            .push(who);
    }

    fn remove(&self, name: &[u8], kind: Kind, who: ConnRef) {
        let mut reg = self.lock();
        let map = reg.of(kind);
        if let Some(subs) = map.get_mut(name) {
            subs.retain(|&c| c != who);
            if subs.is_empty() {
                map.remove(name);
            }
        }
    }

    /// Takes a closing connection's subscriptions out.
    pub(super) fn forget(&self, who: ConnRef, subs: &mut Subs) {
        for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
            for name in subs.set(kind).drain() {
                self.remove(&name, kind, who);
            }
        }
    }

    /// `PUBSUB CHANNELS | SHARDCHANNELS [pattern]`: the channels (`kind`:
    /// [`Kind::Channel`] or [`Kind::Shard`]) with subscribers.
    pub(super) fn channels_of(&self, kind: Kind, pattern: Option<&[u8]>) -> Vec<Arc<[u8]>> {
        let mut reg = self.lock();
        (reg.of(kind).keys())
            .filter(|c| pattern.is_none_or(|p| pattern::glob_exact(p, c)))
            .cloned()
            .collect()
    }

    /// `PUBSUB CHANNELS [pattern]`.
    pub(super) fn channels(&self, pattern: Option<&[u8]>) -> Vec<Arc<[u8]>> {
        self.channels_of(Kind::Channel, pattern)
    }

    /// `PUBSUB NUMSUB | SHARDNUMSUB`: the subscribers of `channel`
    /// (patterns aside).
    pub(super) fn numsub(&self, kind: Kind, channel: &[u8]) -> usize {
        self.lock().of(kind).get(channel).map_or(0, Vec::len)
    }

    /// `PUBSUB NUMPAT`: the patterns with subscribers.
    pub(super) fn numpat(&self) -> usize {
        self.lock().patterns.len()
    }
}

/// A message as Redis sends it: `message channel payload`, `smessage
/// channel payload`, or `pmessage pattern channel payload`, in RESP2.
fn encode(head: &[u8], pattern: Option<&[u8]>, channel: &[u8], message: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(message.len() + channel.len() + 48);
    resp::array(&mut o, 3 + pattern.is_some() as usize);
    resp::bulk(&mut o, head);
    if let Some(p) = pattern {
        resp::bulk(&mut o, p);
    }
    resp::bulk(&mut o, channel);
    resp::bulk(&mut o, message);
    o
}

/// Appends the header of an array of `n` that is a push in RESP3 (`>`).
pub(super) fn push_header(o: &mut Vec<u8>, n: usize, p: Proto) {
    o.push(match p {
        Proto::Resp2 => b'*',
        Proto::Resp3 => b'>',
    });
    resp::push_decimal(o, n as u64);
    o.extend_from_slice(b"\r\n");
}

/// Appends a delivered message in the connection's protocol.
pub(super) fn write_message(o: &mut Vec<u8>, bytes: &[u8], p: Proto) {
    if p == Proto::Resp3 {
        o.push(b'>');
        o.extend_from_slice(&bytes[1..]);
    } else {
        o.extend_from_slice(bytes);
    }
}

/// One connection's subscriptions.
#[derive(Debug, Default)]
pub(super) struct Subs {
    channels: HashSet<Arc<[u8]>>,
    patterns: HashSet<Arc<[u8]>>,
    shard: HashSet<Arc<[u8]>>,
}

impl Subs {
    /// Channels and patterns subscribed: what the (un)subscribe replies
    /// count.
    pub(super) fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Whether the connection has any subscription (channel, pattern or
    /// shard channel): RESP2's subscribed mode.
    pub(super) fn any(&self) -> bool {
        self.count() + self.shard.len() > 0
    }

    /// What a (un)subscribe reply of `kind` counts: shard channels apart
    /// from the others, as Redis.
    fn count_of(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.shard.len(),
            _ => self.count(),
        }
    }

    /// Whether a message that came through `via` is still wanted.
    pub(super) fn wants(&self, d: &Delivery) -> bool {
        match d.kind {
            Kind::Channel => self.channels.contains(&d.via),
            Kind::Pattern => self.patterns.contains(&d.via),
            Kind::Shard => self.shard.contains(&d.via),
        }
    }

    fn set(&mut self, kind: Kind) -> &mut HashSet<Arc<[u8]>> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard,
        }
    }

    /// `SUBSCRIBE` / `PSUBSCRIBE` / `SSUBSCRIBE names...`: one reply per
    /// name.
    pub(super) fn subscribe(
        &mut self,
        reg: &PubSub,
        me: ConnRef,
        kind: Kind,
        names: &[&[u8]],
        o: &mut Vec<u8>,
        p: Proto,
    ) {
        let head: &[u8] = match kind {
            Kind::Channel => b"subscribe",
            Kind::Pattern => b"psubscribe",
            Kind::Shard => b"ssubscribe",
        };
        for &name in names {
            let name: Arc<[u8]> = name.into();
            if self.set(kind).insert(Arc::clone(&name)) {
                reg.add(&name, kind, me);
            }
            push_header(o, 3, p);
            resp::bulk(o, head);
            resp::bulk(o, &name);
            resp::int(o, self.count_of(kind) as i64);
        }
    }

    /// `UNSUBSCRIBE` / `PUNSUBSCRIBE` / `SUNSUBSCRIBE [names...]` (none:
    /// all of them), one reply per name; with none to leave, one reply
    /// with a null name.
    pub(super) fn unsubscribe(
        &mut self,
        reg: &PubSub,
        me: ConnRef,
        kind: Kind,
        names: &[&[u8]],
        o: &mut Vec<u8>,
        p: Proto,
    ) {
        let head: &[u8] = match kind {
            Kind::Channel => b"unsubscribe",
            Kind::Pattern => b"punsubscribe",
            Kind::Shard => b"sunsubscribe",
        };
        let names: Vec<Arc<[u8]>> = if names.is_empty() {
            self.set(kind).iter().cloned().collect()
        } else {
            names.iter().map(|&n| n.into()).collect()
        };
        if names.is_empty() {
            push_header(o, 3, p);
            resp::bulk(o, head);
            resp::null(o, p);
            resp::int(o, self.count_of(kind) as i64);
        }
        for name in names {
            if self.set(kind).remove(&name) {
                reg.remove(&name, kind, me);
            }
            push_header(o, 3, p);
            resp::bulk(o, head);
            resp::bulk(o, &name);
            resp::int(o, self.count_of(kind) as i64);
        }
    }
}

pub(super) mod commands;

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(slot: u32) -> ConnRef {
        ConnRef {
            thread: 0,
            slot,
            gen: 0,
        }
    }

    #[test]
    fn publish_reaches_channel_and_pattern_subscribers_once_each() {
        let reg = PubSub::default();
        let (mut a, mut b) = (Subs::default(), Subs::default());
        let mut o = Vec::new();
        a.subscribe(
            &reg,
            conn(1),
            Kind::Channel,
            &[b"news", b"news"],
            &mut o,
            Proto::Resp2,
        );
        b.subscribe(&reg, conn(2), Kind::Pattern, &[b"n*"], &mut o, Proto::Resp2);
        b.subscribe(
            &reg,
            conn(2),
            Kind::Channel,
            &[b"news"],
            &mut o,
            Proto::Resp2,
        );
        let mut got = Vec::new();
        assert_eq!(reg.publish(b"news", b"hi", |d| got.push(d)), 3);
        assert!(got
            .iter()
            .all(|d| (if d.to.slot == 1 { &a } else { &b }).wants(d)));
        assert_eq!(
            &*got[2].bytes,
            b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
        );
        assert_eq!(reg.publish(b"N", b"x", |_| {}), 0, "patterns match case");
        assert_eq!((reg.numsub(Kind::Channel, b"news"), reg.numpat()), (2, 1));
        a.unsubscribe(&reg, conn(1), Kind::Channel, &[], &mut o, Proto::Resp2);
        reg.forget(conn(2), &mut b);
        assert_eq!(reg.publish(b"news", b"hi", |_| {}), 0);
        assert!(reg.channels(None).is_empty() && reg.numpat() == 0);
    }

    #[test]
    fn replies_count_as_redis() {
        let reg = PubSub::default();
        let mut s = Subs::default();
        let mut o = Vec::new();
        s.unsubscribe(&reg, conn(1), Kind::Channel, &[], &mut o, Proto::Resp3);
        assert_eq!(o, b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n");
        o.clear();
        s.subscribe(&reg, conn(1), Kind::Channel, &[b"a"], &mut o, Proto::Resp2);
        s.subscribe(&reg, conn(1), Kind::Pattern, &[b"p*"], &mut o, Proto::Resp2);
        assert!(o.ends_with(b"*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:2\r\n"));
    }

    #[test]
    fn shard_channels_are_a_namespace_of_their_own() {
        let reg = PubSub::default();
        let (mut a, mut b) = (Subs::default(), Subs::default());
        let mut o = Vec::new();
        a.subscribe(
            &reg,
            conn(1),
            Kind::Shard,
            &[b"s", b"t"],
            &mut o,
            Proto::Resp2,
        );
        a.subscribe(&reg, conn(1), Kind::Channel, &[b"s"], &mut o, Proto::Resp2);
        b.subscribe(&reg, conn(2), Kind::Pattern, &[b"*"], &mut o, Proto::Resp2);
        // The counts: shard channels apart from channels and patterns.
        assert!(o.starts_with(b"*3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n"));
        assert!(o.ends_with(
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\ns\r\n:1\r\n*3\r\n$10\r\npsubscribe\r\n$1\r\n*\r\n:1\r\n"
        ));
        let mut got = Vec::new();
        assert_eq!(reg.spublish(b"s", b"hi", |d| got.push(d)), 1);
        assert_eq!(
            &*got[0].bytes,
            b"*3\r\n$8\r\nsmessage\r\n$1\r\ns\r\n$2\r\nhi\r\n"
        );
        assert!(a.wants(&got[0]));
        // PUBLISH reaches the channel and the pattern, not the shard channel.
        assert_eq!(reg.publish(b"s", b"hi", |_| {}), 2);
        assert_eq!(reg.numsub(Kind::Shard, b"t"), 1);
        let mut chans = reg.channels_of(Kind::Shard, None);
        chans.sort();
        assert_eq!(chans, [b"s".as_slice().into(), b"t".as_slice().into()]);
        o.clear();
        a.unsubscribe(&reg, conn(1), Kind::Shard, &[b"s"], &mut o, Proto::Resp3);
        assert_eq!(o, b">3\r\n$12\r\nsunsubscribe\r\n$1\r\ns\r\n:1\r\n");
        assert!(!a.wants(&got[0]) && a.any());
        reg.forget(conn(1), &mut a);
        assert_eq!(reg.spublish(b"t", b"x", |_| {}), 0);
        assert!(!a.any());
    }
}
