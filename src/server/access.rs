//! Who may talk to the server: the password AUTH checks, protected mode,
//! the optional Unix-domain socket, and turning a client away. (The AUTH
//! command is in `command/connection.rs`, its replies in `strings.rs`.)

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use subtle::ConstantTimeEq;

use super::Shared;

/// Parses `yes` / `no` (also `true` / `false`), as Redis's boolean options.
pub fn parse_yes_no(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("expected yes or no, not {s:?}")),
    }
}

/// Parses file permission bits written in octal, such as `700` or `0770`.
pub fn parse_octal(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s.trim(), 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "expected octal permission bits such as 700, not {s:?}"
        )),
    }
}

/// Whether a client at `ip` is on this host's loopback interface (IPv4
/// addresses mapped into IPv6 included).
pub(super) fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Whether a client that is local (loopback or Unix socket) or not may
/// connect: protected mode turns away non-local clients while no password
/// is configured.
pub(super) fn protected_mode_allows(shared: &Shared, local: bool) -> bool {
    local || !shared.cfg.conns.protected_mode || shared.cfg.conns.needs_password()
}

/// Compares a password in time that depends on the secret's length only:
/// the attempt is copied into a buffer of the secret's length, so neither
/// the position of the first difference nor a length mismatch shows.
fn password_matches(secret: &[u8], attempt: &[u8]) -> bool {
    let mut padded = vec![0u8; secret.len()];
    let n = attempt.len().min(secret.len());
    padded[..n].copy_from_slice(&attempt[..n]);
    let same_len = (secret.len() as u64).ct_eq(&(attempt.len() as u64));
    bool::from(secret.ct_eq(&padded) & same_len)
}

/// What an AUTH attempt amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Auth {
    Granted,
    /// `AUTH <password>` while no password is configured.
    NoPassword,
    /// A wrong user name or password.
    Refused,
}

/// Checks `AUTH password` (`user` is `None`) or `AUTH user password`; the
/// only user nvkv has is `default`.
pub(super) fn authenticate(shared: &Shared, user: Option<&[u8]>, attempt: &[u8]) -> Auth {
    let default_user = user.is_none_or(|u| u == b"default");
    let ok = match shared.cfg.conns.password().as_deref() {
        // Without a password the default user takes any (Redis's `nopass`).
        None if user.is_none() => return Auth::NoPassword,
        None => default_user,
        Some(secret) => password_matches(secret.as_bytes(), attempt) & default_user,
    };
    if ok {
        Auth::Granted
    } else {
        Auth::Refused
    }
}

/// Sends a client that is turned away its reason and closes the socket
/// gently: the reply, then FIN, then whatever the client had sent is
/// discarded (closing with unread input would reset the connection and
/// could lose the reply). The socket is non-blocking: nothing here waits.
pub(super) fn turn_away<S>(mut s: S, msg: &[u8])
where
    S: Read + Write + ShutdownWrite,
{
    let _ = s.write(msg);
    s.shutdown_write();
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match s.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Half-closes a socket for writing (TCP and Unix streams alike).
pub(super) trait ShutdownWrite {
    /// Sends FIN; errors are ignored (the socket is closed right after).
    fn shutdown_write(&mut self);
}

impl ShutdownWrite for &std::net::TcpStream {
    fn shutdown_write(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl ShutdownWrite for &UnixStream {
    fn shutdown_write(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

/// The `--unixsocket` listener. The socket file is removed when it drops.
pub(super) struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl UnixSocket {
    /// Binds `path` (a stale socket file there is replaced, as Redis does)
    /// with permission bits `perm`.
    pub(super) fn bind(path: &Path, perm: u32) -> Result<UnixSocket> {
        if std::fs::symlink_metadata(path).is_ok_and(|m| is_socket(&m)) {
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        let listener =
            UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
        let sock = UnixSocket {
            listener,
            path: path.to_owned(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(perm))
            .with_context(|| format!("setting the permissions of {}", path.display()))?;
        sock.listener.set_nonblocking(true)?;
        Ok(sock)
    }

    /// The listening socket's descriptor, for poll().
    pub(super) fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.listener)
    }

    /// Accepts every waiting connection and deals them out to connection
    /// threads, round robin from `next`.
    pub(super) fn accept_all(&self, shared: &Shared, next: &mut usize) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let c = &shared.conns[*next % shared.conns.len()];
                    *next += 1;
                    c.incoming_unix.push(stream);
                    c.ring();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("accept on the unix socket: {e}");
                    break;
                }
            }
        }
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn is_socket(m: &std::fs::Metadata) -> bool {
    std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())
}

/// Raises the soft limit on open files towards `clients` plus a margin for
/// the store's own files (up to the hard limit), as Redis does for
/// `maxclients`; `Err` with the most clients the limit allows when it
/// stays below what `clients` need.
pub(super) fn raise_fd_limit(clients: usize) -> Result<(), u64> {
    let want = clients as u64 + FDS_RESERVED;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(());
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads one valid rlimit.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0;
    let now = if ok { raised.rlim_cur } else { lim.rlim_cur };
    match now < want {
        true => Err(now.saturating_sub(FDS_RESERVED)),
        false => Ok(()),
    }
}

/// Files kept for the store, the listeners and the engines beside the
/// clients' sockets.
const FDS_RESERVED: u64 = 128;

/// The password in `path`: its first line, without the line ending. The
/// file must belong to no one else's eyes: readable by group or others, it
/// is refused.
pub(super) fn read_password_file(path: &std::path::Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| anyhow::anyhow!("--requirepass-file {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "--requirepass-file {shown}: mode {mode:o} lets group or others read it; chmod 600 it"
        );
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--requirepass-file {shown}: {e}"))?;
    let pw = text.lines().next().unwrap_or("").to_string();
    if pw.is_empty() {
        anyhow::bail!("--requirepass-file {shown}: the first line is empty");
    }
    Ok(pw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_comparison() {
        assert!(password_matches(b"secret", b"secret"));
        assert!(!password_matches(b"secret", b"secreT"));
        assert!(!password_matches(b"secret", b"secret2"));
        assert!(!password_matches(b"secret", b"secre"));
        assert!(!password_matches(b"secret", b""));
        assert!(password_matches(b"", b""));
    }

    #[test]
    fn option_parsers() {
        assert_eq!(parse_octal("700"), Ok(0o700));
        assert_eq!(parse_octal("0770"), Ok(0o770));
        assert!(parse_octal("800").is_err());
        assert!(parse_octal("7777").is_err());
        assert_eq!(parse_yes_no("no"), Ok(false));
        assert_eq!(parse_yes_no("YES"), Ok(true));
        assert!(parse_yes_no("maybe").is_err());
    }

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("127.3.2.1".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("192.0.2.1".parse().unwrap()));
        assert!(!is_loopback("::ffff:192.0.2.1".parse().unwrap()));
    }
}
