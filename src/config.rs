//! `nvkv serve --config FILE`: every serve flag from a TOML file.
//!
//! Keys are the long flag names (`tcp_threads` or `tcp-threads`). The file's
//! entries become flags placed before the command line's own, and the serve
//! command lets a later flag override an earlier one, so flags given on the
//! command line win over the file.

use std::ffi::OsString;
use std::path::Path;

/// Where `--config FILE` sits in `argv`, if after the `serve` subcommand.
fn config_path(argv: &[OsString]) -> Option<(usize, OsString)> {
    let serve = argv.iter().position(|a| a == "serve")?;
    argv.iter().enumerate().skip(serve + 1).find_map(|(i, a)| {
        let s = a.to_str()?;
        if s == "--config" {
            argv.get(i + 1).map(|p| (serve, p.clone()))
        } else {
            s.strip_prefix("--config=").map(|p| (serve, p.into()))
        }
    })
}

/// Turns one TOML entry into command-line arguments.
fn entry_args(name: &str, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let flag = format!("--{name}");
    Ok(match value {
        toml::Value::Boolean(true) => vec![flag.into()],
        toml::Value::Boolean(false) => vec![],
        toml::Value::String(s) => vec![flag.into(), s.into()],
        toml::Value::Integer(n) => vec![flag.into(), n.to_string().into()],
        toml::Value::Float(x) => vec![flag.into(), x.to_string().into()],
        other => {
            return Err(format!(
                "{name}: unsupported value {other} (use a string, number or boolean)"
            ))
        }
    })
}

/// Reads the TOML file and checks its keys against `serve`'s flags.
pub fn file_args(path: &Path, serve: &clap::Command) -> Result<Vec<OsString>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let known: Vec<&str> = serve
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "config" && *l != "help")
        .collect();
    let mut args = Vec::new();
    let mut unknown = Vec::new();
    for (key, value) in &table {
        let name = key.replace('_', "-");
        if !known.contains(&name.as_str()) {
            unknown.push(key.clone());
            continue;
        }
        args.extend(entry_args(&name, value).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    if !unknown.is_empty() {
        return Err(format!(
            "{}: unknown key(s): {}; serve takes: {}",
            path.display(),
            unknown.join(", "),
            known.join(", ")
        ));
    }
    Ok(args)
}

/// Inserts the flags from `serve --config FILE` right after `serve`, so
/// that the command line's own flags come later and win.
pub fn expand(argv: Vec<OsString>, serve: &clap::Command) -> Result<Vec<OsString>, String> {
    let Some((at, path)) = config_path(&argv) else {
        return Ok(argv);
    };
    let extra = file_args(Path::new(&path), serve)?;
    let mut out = argv;
    out.splice(at + 1..at + 1, extra);
    Ok(out)
}
