//! The pub/sub commands: SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and their
//! UNSUBSCRIBEs on a connection's subscriptions, PUBLISH and SPUBLISH
//! through the registry, PUBSUB's introspection, and what RESP2's
//! subscribed mode allows.

use super::super::clients::PUBSUB;
use super::super::conn::Conn;
use super::super::msg::ConnRef;
use super::super::table::Cmd;
use super::super::{strings, Shared};
use super::{Delivery, Kind};
use crate::resp;

/// The commands RESP2's subscribed mode allows (PING answers otherwise
/// there: [`ping_subscribed`]).
pub(in crate::server) fn allowed_subscribed(cmd: Cmd) -> bool {
    matches!(
        cmd,
        Cmd::Subscribe
            | Cmd::Psubscribe
            | Cmd::Ssubscribe
            | Cmd::Unsubscribe
            | Cmd::Punsubscribe
            | Cmd::Sunsubscribe
            | Cmd::Ping
            | Cmd::Quit
            | Cmd::Reset
    )
}

/// PING in RESP2's subscribed mode: `pong` and the message (empty by
/// default) in an array, as Redis.
pub(in crate::server) fn ping_subscribed(c: &mut Conn, args: &[&[u8]]) {
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

/// PUBLISH, SPUBLISH, SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, UNSUBSCRIBE,
/// PUNSUBSCRIBE, SUNSUBSCRIBE.
pub(in crate::server) fn command(c: &mut Conn, shared: &Shared, cmd: Cmd, args: &[&[u8]]) {
    let reg = &shared.pubsub;
    let (me, p) = (c.me, c.proto);
    let mut o = Vec::new();
    match cmd {
        Cmd::Publish | Cmd::Spublish => {
            let shard = cmd == Cmd::Spublish;
            let (n, mine) = publish(shared, me, shard, args[1], args[2]);
            // A client subscribed to what it publishes gets the message
            // before the reply, as from Redis.
            mine.iter().for_each(|d| c.push_published(d));
            return c.reply(|o| resp::int(o, n as i64));
        }
        Cmd::Subscribe => c
            .subs
            .subscribe(reg, me, Kind::Channel, &args[1..], &mut o, p),
        Cmd::Psubscribe => c
            .subs
            .subscribe(reg, me, Kind::Pattern, &args[1..], &mut o, p),
        Cmd::Ssubscribe => c
            .subs
            .subscribe(reg, me, Kind::Shard, &args[1..], &mut o, p),
        Cmd::Unsubscribe => c
            .subs
            .unsubscribe(reg, me, Kind::Channel, &args[1..], &mut o, p),
        Cmd::Sunsubscribe => c
            .subs
            .unsubscribe(reg, me, Kind::Shard, &args[1..], &mut o, p),
        _ => c
            .subs
            .unsubscribe(reg, me, Kind::Pattern, &args[1..], &mut o, p),
    }
    c.info.set_flag(PUBSUB, c.subs.any());
    c.reply(|out| out.extend_from_slice(&o))
}

/// Queues `message` for every subscriber of `channel` (a shard channel
/// with `shard`) on their threads and wakes those threads; returns how
/// many will receive it, and the deliveries to the publisher `me` itself
/// (for it to take at once).
fn publish(
    shared: &Shared,
    me: ConnRef,
    shard: bool,
    channel: &[u8],
    message: &[u8],
) -> (usize, Vec<Delivery>) {
    let mut rung = vec![false; shared.conns.len()];
    let mut mine = Vec::new();
    let post = |d: Delivery| {
        if d.to == me {
            return mine.push(d);
        }
        let t = d.to.thread as usize;
        shared.conns[t].published.push(d);
        rung[t] = true;
    };
    let n = if shard {
        shared.pubsub.spublish(channel, message, post)
    } else {
        shared.pubsub.publish(channel, message, post)
    };
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

/// `PUBSUB CHANNELS | SHARDCHANNELS [pattern] | NUMSUB | SHARDNUMSUB
/// [channel ...] | NUMPAT | HELP` (`sub` is the subcommand's description
/// name, its arity checked).
pub(in crate::server) fn pubsub(c: &mut Conn, shared: &Shared, sub: &'static str, args: &[&[u8]]) {
    let reg = &shared.pubsub;
    let kind = match sub {
        "pubsub|shardchannels" | "pubsub|shardnumsub" => Kind::Shard,
        _ => Kind::Channel,
    };
    match sub {
        "pubsub|channels" | "pubsub|shardchannels" if args.len() > 3 => {
            let msg = strings::subcommand_syntax(args[1], "PUBSUB");
            c.reply(|o| resp::error(o, &msg))
        }
        "pubsub|channels" | "pubsub|shardchannels" => {
            let found = reg.channels_of(kind, args.get(2).copied());
            c.reply(|o| {
                resp::array(o, found.len());
                found.iter().for_each(|ch| resp::bulk(o, ch));
            })
        }
        "pubsub|numsub" | "pubsub|shardnumsub" => {
            let counts: Vec<usize> = args[2..].iter().map(|ch| reg.numsub(kind, ch)).collect();
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
        _ => c.reply(|o| resp::lines(o, PUBSUB_HELP)),
    }
}
