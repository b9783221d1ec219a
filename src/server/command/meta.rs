//! What the commands are: COMMAND (COUNT, INFO, DOCS, LIST, GETKEYS)
//! from the command table, subcommands checked against their
//! descriptions, the codes CLIENT LIST shows, HELP replies.

use super::super::conn::Conn;
use super::super::strings;
use super::super::table::{self, Meta};
use crate::resp;

/// What [`super::super::clients::ClientInfo::last_cmd`] holds for a command: its
/// index in the table plus one, and in the low byte its subcommand's
/// index in its description plus one.
pub(super) fn command_code(index: u16, spec: &table::Spec, args: &[&[u8]]) -> u32 {
    let sub = match args.get(1) {
        Some(sub) if table::StatSlots::get().container(index) => table::meta_of(name_bytes(spec))
            .and_then(|top| top.subcommands.iter().position(|m| sub_is(m, sub)))
            .map_or(0, |i| i as u32 + 1),
        _ => 0,
    };
    (u32::from(index) + 1) << 8 | sub.min(255)
}

pub(super) fn name_bytes(spec: &table::Spec) -> &'static [u8] {
    spec.name.as_bytes()
}

/// Whether `m` is the subcommand `sub` (any case).
pub(super) fn sub_is(m: &Meta, sub: &[u8]) -> bool {
    (m.name.split_once('|')).is_some_and(|(_, s)| s.as_bytes().eq_ignore_ascii_case(sub))
}

/// The name CLIENT LIST shows for a [`command_code`] (`NULL` for none,
/// as Redis).
pub(super) fn command_name(code: u32) -> String {
    let Some(spec) = (code >> 8)
        .checked_sub(1)
        .and_then(|i| table::COMMANDS.get(i as usize))
    else {
        return "NULL".into();
    };
    let sub = (code & 0xff).checked_sub(1).and_then(|i| {
        table::meta_of(spec.name.as_bytes()).and_then(|m| m.subcommands.get(i as usize))
    });
    match sub {
        Some(m) => m.name.into(),
        None => spec.name.to_ascii_lowercase(),
    }
}

/// Checks the arity of subcommand `args[1]` of `cmd` (`client`,
/// `command`) by its description; replies and returns `None` when it is
/// unknown or its arity is wrong.
pub(super) fn checked_subcommand(c: &mut Conn, cmd: &str, args: &[&[u8]]) -> Option<&'static Meta> {
    let top = table::meta_of(cmd.as_bytes()).expect("described");
    let Some(m) = table::subcommand(top, args[1]) else {
        let msg = strings::unknown_subcommand(args[1], &cmd.to_ascii_uppercase());
        c.not_a_call();
        c.reply(|o| resp::error(o, &msg));
        return None;
    };
    let n = args.len() as i32;
    if (m.arity > 0 && n != m.arity) || n < -m.arity {
        c.rejected();
        let msg = strings::wrong_arity(m.name);
        c.reply(|o| resp::error(o, &msg));
        return None;
    }
    Some(m)
}

/// `COMMAND [COUNT | INFO | DOCS | LIST | GETKEYS]`, from the command
/// table's descriptions.
pub(super) fn command(c: &mut Conn, args: &[&[u8]]) {
    let p = c.proto;
    if args.len() == 1 {
        let all = Meta::all();
        return c.reply(|o| {
            resp::array(o, all.len());
            all.iter().for_each(|m| m.write_info(o, p));
        });
    }
    let Some(m) = checked_subcommand(c, "command", args) else {
        return;
    };
    let named = |names: &[&[u8]]| -> Vec<Option<&'static Meta>> {
        if names.is_empty() {
            Meta::all().into_iter().map(Some).collect()
        } else {
            names.iter().map(|n| described(n)).collect()
        }
    };
    match m.name {
        "command|count" => c.reply(|o| resp::int(o, table::COMMANDS.len() as i64)),
        "command|info" => {
            let found = named(&args[2..]);
            c.reply(|o| {
                resp::array(o, found.len());
                for m in found {
                    match m {
                        Some(m) => m.write_info(o, p),
                        None => resp::null(o, p),
                    }
                }
            })
        }
        "command|docs" => {
            let found: Vec<&Meta> = named(&args[2..]).into_iter().flatten().collect();
            c.reply(|o| {
                resp::map(o, found.len(), p);
                for m in found {
                    resp::bulk(o, m.name.as_bytes());
                    m.write_docs(o, p);
                }
            })
        }
        "command|list" => {
            let names: Vec<&str> = (Meta::all().into_iter())
                .flat_map(|m| std::iter::once(m).chain(m.subcommands))
                .map(|m| m.name)
                .collect();
            let keep: Box<dyn Fn(&str) -> bool> = match args {
                [_, _] => Box::new(|_| true),
                [_, _, by, kind, what] if by.eq_ignore_ascii_case(b"FILTERBY") => {
                    match kind.to_ascii_uppercase().as_slice() {
                        b"MODULE" => Box::new(|_| false),
                        b"ACLCAT" => {
                            let cat = format!("@{}", String::from_utf8_lossy(what));
                            Box::new(move |n| {
                                described(n.as_bytes()).is_some_and(|m| {
                                    m.acl.iter().any(|a| a.eq_ignore_ascii_case(&cat))
                                })
                            })
                        }
                        b"PATTERN" => Box::new(|n| super::super::pattern::glob(what, n.as_bytes())),
                        _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
                    }
                }
                _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
            };
            let names: Vec<&str> = names.into_iter().filter(|n| keep(n)).collect();
            c.reply(|o| {
                resp::array(o, names.len());
                names.iter().for_each(|n| resp::bulk(o, n.as_bytes()));
            })
        }
        "command|getkeys" => {
            let target = &args[2..];
            let Some(m) = described(target[0]) else {
                return c.reply(|o| resp::error(o, strings::GETKEYS_INVALID));
            };
            let n = target.len() as i32;
            if !m.has_keys() {
                return c.reply(|o| resp::error(o, strings::GETKEYS_NO_KEYS));
            }
            let arity = m.arity();
            if (arity > 0 && n != arity) || n < -arity {
                return c.reply(|o| resp::error(o, strings::GETKEYS_ARITY));
            }
            let keys = m.key_positions(target.len());
            c.reply(|o| {
                resp::array(o, keys.len());
                keys.iter().for_each(|&i| resp::bulk(o, target[i]));
            })
        }
        _ => {
            let msg = strings::unknown_subcommand(args[1], "COMMAND");
            c.not_a_call();
            c.reply(|o| resp::error(o, &msg))
        }
    }
}

/// The description of a command nvkv has (`client|list` for a
/// subcommand), any case.
pub(super) fn described(name: &[u8]) -> Option<&'static Meta> {
    let top = name.split(|&b| b == b'|').next().unwrap_or(name);
    table::lookup(top)?;
    match table::meta_of(name) {
        Some(m) => Some(m),
        None if !name.contains(&b'|') => Meta::all()
            .into_iter()
            .find(|m| m.name.as_bytes().eq_ignore_ascii_case(name)),
        None => None,
    }
}

/// Redis's help reply: a header naming `cmd`, the lines, and a footer.
pub(super) fn help(c: &mut Conn, cmd: &str, lines: &[&str]) {
    let header = strings::help_header(cmd);
    c.reply(|o| {
        resp::array(o, lines.len() + 3);
        resp::simple(o, &header);
        for l in lines.iter().chain(&strings::HELP_FOOTER) {
            resp::simple(o, l);
        }
    })
}
