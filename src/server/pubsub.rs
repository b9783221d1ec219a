//! Pub/sub: SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE, PUBLISH and
//! PUBSUB, as Redis 7.
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

use super::conn::Conn;
use super::msg::ConnRef;
use super::table::Cmd;
use super::{pattern, strings, Shared};
use crate::resp::{self, Proto};

/// A message on its way to one subscriber.
#[derive(Debug)]
pub(super) struct Delivery {
    pub to: ConnRef,
    /// The channel (or, with `pattern`, the pattern) it came through.
    pub via: Arc<[u8]>,
    pub pattern: bool,
    /// The message in RESP2 (`*3` message, `*4` pmessage); RESP3's push
    /// differs only in its first byte.
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
}

impl Registry {
    fn of(&mut self, pattern: bool) -> &mut HashMap<Arc<[u8]>, Vec<ConnRef>> {
        if pattern {
            &mut self.patterns
        } else {
            &mut self.channels
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
            let bytes: Arc<[u8]> = encode(None, channel, message).into();
            for &to in subs {
                post(Delivery {
                    to,
                    via: Arc::clone(name),
                    pattern: false,
                    bytes: Arc::clone(&bytes),
                });
                n += 1;
            }
        }
        for (pat, subs) in &reg.patterns {
            if !pattern::glob_exact(pat, channel) {
                continue;
            }
            let bytes: Arc<[u8]> = encode(Some(pat), channel, message).into();
            for &to in subs {
                post(Delivery {
                    to,
                    via: Arc::clone(pat),
                    pattern: true,
                    bytes: Arc::clone(&bytes),
                });
                n += 1;
            }
        }
        n
    }

    fn add(&self, name: &Arc<[u8]>, pattern: bool, who: ConnRef) {
        self.lock()
            .of(pattern)
            .entry(Arc::clone(name))
            .or_default()
            .push(who);
    }

    fn remove(&self, name: &[u8], pattern: bool, who: ConnRef) {
        let mut reg = self.lock();
        let map = reg.of(pattern);
        if let Some(subs) = map.get_mut(name) {
            subs.retain(|&c| c != who);
            if subs.is_empty() {
                map.remove(name);
            }
        }
    }

    /// Takes a closing connection's subscriptions out.
    pub(super) fn forget(&self, who: ConnRef, subs: &mut Subs) {
        for ch in subs.channels.drain() {
            self.remove(&ch, false, who);
        }
        for p in subs.patterns.drain() {
            self.remove(&p, true, who);
        }
    }

    /// `PUBSUB CHANNELS [pattern]`: the channels with subscribers.
    pub(super) fn channels(&self, pattern: Option<&[u8]>) -> Vec<Arc<[u8]>> {
        let reg = self.lock();
        (reg.channels.keys())
            .filter(|c| pattern.is_none_or(|p| pattern::glob_exact(p, c)))
            .cloned()
            .collect()
    }

    /// `PUBSUB NUMSUB`: the subscribers of `channel` (patterns aside).
    pub(super) fn numsub(&self, channel: &[u8]) -> usize {
        self.lock().channels.get(channel).map_or(0, Vec::len)
    }

    /// `PUBSUB NUMPAT`: the patterns with subscribers.
    pub(super) fn numpat(&self) -> usize {
        self.lock().patterns.len()
    }
}

/// A message as Redis sends it: `message channel payload`, or
/// `pmessage pattern channel payload`, in RESP2.
fn encode(pattern: Option<&[u8]>, channel: &[u8], message: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(message.len() + channel.len() + 48);
    match pattern {
        None => {
            resp::array(&mut o, 3);
            resp::bulk(&mut o, b"message");
        }
        Some(p) => {
            resp::array(&mut o, 4);
            resp::bulk(&mut o, b"pmessage");
            resp::bulk(&mut o, p);
        }
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
}

impl Subs {
    /// Channels and patterns subscribed: what the (un)subscribe replies
    /// count.
    pub(super) fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Whether a message that came through `via` is still wanted.
    pub(super) fn wants(&self, d: &Delivery) -> bool {
        if d.pattern {
            self.patterns.contains(&d.via)
        } else {
            self.channels.contains(&d.via)
        }
    }

    fn set(&mut self, pattern: bool) -> &mut HashSet<Arc<[u8]>> {
        if pattern {
            &mut self.patterns
        } else {
            &mut self.channels
        }
    }

    /// `SUBSCRIBE` / `PSUBSCRIBE names...`: one reply per name.
    pub(super) fn subscribe(
        &mut self,
        reg: &PubSub,
        me: ConnRef,
        pattern: bool,
        names: &[&[u8]],
        o: &mut Vec<u8>,
        p: Proto,
    ) {
        let kind: &[u8] = if pattern { b"psubscribe" } else { b"subscribe" };
        for &name in names {
            let name: Arc<[u8]> = name.into();
            if self.set(pattern).insert(Arc::clone(&name)) {
                reg.add(&name, pattern, me);
            }
            push_header(o, 3, p);
            resp::bulk(o, kind);
            resp::bulk(o, &name);
            resp::int(o, self.count() as i64);
        }
    }

    /// `UNSUBSCRIBE` / `PUNSUBSCRIBE [names...]` (none: all of them), one
    /// reply per name; with none to leave, one reply with a null name.
    pub(super) fn unsubscribe(
        &mut self,
        reg: &PubSub,
        me: ConnRef,
        pattern: bool,
        names: &[&[u8]],
        o: &mut Vec<u8>,
        p: Proto,
    ) {
        let kind: &[u8] = if pattern {
            b"punsubscribe"
        } else {
            b"unsubscribe"
        };
        let names: Vec<Arc<[u8]>> = if names.is_empty() {
            self.set(pattern).iter().cloned().collect()
        } else {
            names.iter().map(|&n| n.into()).collect()
        };
        if names.is_empty() {
            push_header(o, 3, p);
            resp::bulk(o, kind);
            resp::null(o, p);
            resp::int(o, self.count() as i64);
        }
        for name in names {
            if self.set(pattern).remove(&name) {
                reg.remove(&name, pattern, me);
            }
            push_header(o, 3, p);
            resp::bulk(o, kind);
            resp::bulk(o, &name);
            resp::int(o, self.count() as i64);
        }
    }
}

// ---------------------------------------------------------------------
// The commands.

/// The commands RESP2's subscribed mode allows (PING answers otherwise
/// there: [`ping_subscribed`]).
pub(super) fn allowed_subscribed(cmd: Cmd) -> bool {
    matches!(
        cmd,
        Cmd::Subscribe
            | Cmd::Psubscribe
            | Cmd::Unsubscribe
            | Cmd::Punsubscribe
            | Cmd::Ping
            | Cmd::Quit
            | Cmd::Reset
    )
}

/// PING in RESP2's subscribed mode: `pong` and the message (empty by
/// default) in an array, as Redis.
pub(super) fn ping_subscribed(c: &mut Conn, args: &[&[u8]]) {
    if args.len() > 2 {
        return c.reply(|o| resp::error(o, &strings::wrong_arity("ping")));
    }
    let msg = args.get(1).copied().unwrap_or_default();
    c.reply(|o| {
        resp::array(o, 2);
        resp::bulk(o, strings::PONG_SUBSCRIBED);
        resp::bulk(o, msg);
    })
}

/// PUBLISH, SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE.
pub(super) fn command(c: &mut Conn, shared: &Shared, cmd: Cmd, args: &[&[u8]]) {
    let reg = &shared.pubsub;
    let (me, p) = (c.me, c.proto);
    let mut o = Vec::new();
    match cmd {
        Cmd::Publish => {
            let (n, mine) = publish(shared, me, args[1], args[2]);
            // A client subscribed to what it publishes gets the message
            // before the reply, as from Redis.
            mine.iter().for_each(|d| c.push_published(d));
            return c.reply(|o| resp::int(o, n as i64));
        }
        Cmd::Subscribe => c.subs.subscribe(reg, me, false, &args[1..], &mut o, p),
        Cmd::Psubscribe => c.subs.subscribe(reg, me, true, &args[1..], &mut o, p),
        Cmd::Unsubscribe => c.subs.unsubscribe(reg, me, false, &args[1..], &mut o, p),
        _ => c.subs.unsubscribe(reg, me, true, &args[1..], &mut o, p),
    }
    c.info.set_flag(super::conn::PUBSUB, c.subs.count() > 0);
    c.reply(|out| out.extend_from_slice(&o))
}

/// Queues `message` for every subscriber of `channel` on their threads and
/// wakes those threads; returns how many will receive it, and the
/// deliveries to the publisher `me` itself (for it to take at once).
fn publish(shared: &Shared, me: ConnRef, channel: &[u8], message: &[u8]) -> (usize, Vec<Delivery>) {
    let mut rung = vec![false; shared.conns.len()];
    let mut mine = Vec::new();
    let n = shared.pubsub.publish(channel, message, |d| {
        if d.to == me {
            return mine.push(d);
        }
        let t = d.to.thread as usize;
        shared.conns[t].published.push(d);
        rung[t] = true;
    });
    for (t, _) in rung.iter().enumerate().filter(|(_, &r)| r) {
        shared.conns[t].ring();
    }
    (n, mine)
}

const PUBSUB_HELP: &[&str] = &[
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
    "HELP",
    "    Prints this help.",
];

/// `PUBSUB CHANNELS [pattern] | NUMSUB [channel ...] | NUMPAT | HELP`
/// (`sub` is the subcommand's description name, its arity checked).
pub(super) fn pubsub(c: &mut Conn, shared: &Shared, sub: &'static str, args: &[&[u8]]) {
    let reg = &shared.pubsub;
    match sub {
        "pubsub|channels" if args.len() > 3 => {
            let msg = strings::subcommand_syntax(args[1], "PUBSUB");
            c.reply(|o| resp::error(o, &msg))
        }
        "pubsub|channels" => {
            let found = reg.channels(args.get(2).copied());
            c.reply(|o| {
                resp::array(o, found.len());
                found.iter().for_each(|ch| resp::bulk(o, ch));
            })
        }
        "pubsub|numsub" => {
            let counts: Vec<usize> = args[2..].iter().map(|ch| reg.numsub(ch)).collect();
            c.reply(|o| {
                resp::array(o, 2 * counts.len());
                for (ch, n) in args[2..].iter().zip(counts) {
                    resp::bulk(o, ch);
                    resp::int(o, n as i64);
                }
            })
        }
        "pubsub|numpat" => {
            let n = reg.numpat();
            c.reply(|o| resp::int(o, n as i64))
        }
        _ => c.reply(|o| super::slowlog::help(o, PUBSUB_HELP)),
    }
}

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
            false,
            &[b"news", b"news"],
            &mut o,
            Proto::Resp2,
        );
        b.subscribe(&reg, conn(2), true, &[b"n*"], &mut o, Proto::Resp2);
        b.subscribe(&reg, conn(2), false, &[b"news"], &mut o, Proto::Resp2);
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
        assert_eq!((reg.numsub(b"news"), reg.numpat()), (2, 1));
        a.unsubscribe(&reg, conn(1), false, &[], &mut o, Proto::Resp2);
        reg.forget(conn(2), &mut b);
        assert_eq!(reg.publish(b"news", b"hi", |_| {}), 0);
        assert!(reg.channels(None).is_empty() && reg.numpat() == 0);
    }

    #[test]
    fn replies_count_as_redis() {
        let reg = PubSub::default();
        let mut s = Subs::default();
        let mut o = Vec::new();
        s.unsubscribe(&reg, conn(1), false, &[], &mut o, Proto::Resp3);
        assert_eq!(o, b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n");
        o.clear();
        s.subscribe(&reg, conn(1), false, &[b"a"], &mut o, Proto::Resp2);
        s.subscribe(&reg, conn(1), true, &[b"p*"], &mut o, Proto::Resp2);
        assert!(o.ends_with(b"*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:2\r\n"));
    }
}
