//! Connections: URL parsing (AUTH from the URL or the environment, passwords redacted), connect
//! with a timeout, reconnect with backoff, and noticing that Redis restarted (its `run_id`).

use crate::{ConnectError, LinkError};
use redis::{Connection, IntoConnectionInfo, RedisError, Value};
use std::time::{Duration, Instant};

/// The largest message [`Options::max_message`] accepts: Redis' default `proto-max-bulk-len`.
pub const MAX_MESSAGE_LIMIT: usize = 512 * 1024 * 1024;

/// Connection and delivery settings shared by [`RemoteQueue`](crate::RemoteQueue) and
/// [`RemotePool`](crate::RemotePool).
#[derive(Debug, Clone)]
pub struct Options {
    /// Time allowed for one connection attempt and for the first connection (default 5 s).
    pub connect_timeout: Duration,
    /// Read/write timeout of one command, on top of any `BLOCK` time (default 5 s).
    pub io_timeout: Duration,
    /// An entry delivered to a consumer that has not acknowledged it for this long is claimed by
    /// another consumer (default 30 s). A [`Delivery`](crate::Delivery) must be acknowledged
    /// within this time or it may be delivered again.
    pub claim_idle: Duration,
    /// The largest encoded message accepted; larger ones are refused before sending
    /// (default 16 MiB, at most [`MAX_MESSAGE_LIMIT`]).
    pub max_message: usize,
    /// The longest pause between reconnection attempts (default 1 s; the first is 10 ms).
    pub max_backoff: Duration,
    /// How long calls without a timeout (`RemoteQueue::get`, `RemoteResult::get`) keep
    /// reconnecting while Redis is unreachable before they return `Unreachable` /
    /// `ConnectionLost` (default 60 s). Workers (`serve`) keep trying for as long as they run.
    pub outage_timeout: Duration,
    /// [`RemoteQueue`](crate::RemoteQueue): how many entries one read (`XREADGROUP COUNT n`)
    /// takes into the handle's local buffer. 0 (the default) is automatic: a read takes 1 entry,
    /// the next twice as many after each read that came back full (up to 32), and 1 again after a
    /// read that found nothing, so a consumer reads ahead only while entries keep coming and items
    /// still spread over consumers when they trickle in. A fixed n > 0 always reads n (1: one
    /// round trip per `get`). Buffered entries are pending for this consumer: one that dies with
    /// a full buffer has them delivered to others after `claim_idle`, and entries buffered for
    /// longer than `claim_idle / 2` are dropped from the buffer unhanded (another consumer may
    /// claim them), so an entry is not handed out twice by a live consumer. `get` acknowledges
    /// the items of one read together, with the next read (see `RemoteQueue::get`).
    pub prefetch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(5),
            claim_idle: Duration::from_secs(30),
            max_message: 16 * 1024 * 1024,
            max_backoff: Duration::from_secs(1),
            outage_timeout: Duration::from_secs(60),
            prefetch: 0,
        }
    }
}

impl Options {
    /// `Err(too_large(size, max))` when an encoded message of `size` bytes is over the limit.
    pub(crate) fn check_size<E>(
        &self,
        size: usize,
        too_large: impl FnOnce(usize, usize) -> E,
    ) -> Result<(), E> {
        let max = self.max_message.min(MAX_MESSAGE_LIMIT);
        if size > max {
            return Err(too_large(size, max));
        }
        Ok(())
    }
}

/// The URL with the password (if any) replaced by `***`: what errors and logs show.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let host_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..host_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let shown = match userinfo.find(':') {
        Some(c) => format!("{}:***", &userinfo[..c]),
        None => "***".to_string(),
    };
    format!("{}{}{}", &url[..scheme_end + 3], shown, &rest[at..])
}

/// A `redis::Client` for `info`; with the `tls` feature and a `rediss://` URL, the server's
/// certificate is checked against the PEM file named by `MULTIPROC_REDIS_CA_FILE` if set (else
/// the webpki roots).
fn client_for(info: redis::ConnectionInfo) -> std::result::Result<redis::Client, String> {
    #[cfg(feature = "tls")]
    if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
        // rustls needs one process-wide crypto provider; an already installed one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Some(path) = std::env::var_os("MULTIPROC_REDIS_CA_FILE") {
            let pem = std::fs::read(&path).map_err(|e| {
                format!(
                    "reading MULTIPROC_REDIS_CA_FILE {}: {e}",
                    std::path::Path::new(&path).display()
                )
            })?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            return redis::Client::build_with_tls(info, certs).map_err(|e| e.to_string());
        }
    }
    redis::Client::open(info).map_err(|e| e.to_string())
}

/// Where to connect: a client built once from the URL (plus AUTH from the environment).
#[derive(Clone)]
pub(crate) struct Endpoint {
    client: redis::Client,
    pub(crate) shown: String,
    pub(crate) opts: Options,
}

impl Endpoint {
    pub(crate) fn new(url: &str, opts: Options) -> Result<Self, ConnectError> {
        let shown = redact_url(url);
        let bad = |msg: String| ConnectError::BadUrl {
            url: shown.clone(),
            msg,
        };
        // The redis crate's parse errors quote the scheme at most, never the password.
        let mut info = url.into_connection_info().map_err(|e| bad(e.to_string()))?;
        if info.redis_settings().password().is_none()
            && let Ok(pw) = std::env::var("MULTIPROC_REDIS_PASSWORD")
        {
            let mut rs = info.redis_settings().clone().set_password(pw);
            if rs.username().is_none()
                && let Ok(user) = std::env::var("MULTIPROC_REDIS_USERNAME")
            {
                rs = rs.set_username(user);
            }
            info = info.set_redis_settings(rs);
        }
        let client = client_for(info).map_err(|e| bad(e.to_string()))?;
        Ok(Endpoint {
            client,
            shown,
            opts,
        })
    }

    /// One attempt within `connect_timeout`.
    pub(crate) fn connect_once(&self) -> Result<Connection, LinkError> {
        let t = self.opts.connect_timeout;
        let con = self
            .client
            .get_connection_with_timeout(t)
            .map_err(|e| self.unreachable(&e))?;
        con.set_read_timeout(Some(self.opts.io_timeout))
            .and_then(|_| con.set_write_timeout(Some(self.opts.io_timeout)))
            .map_err(|e| self.unreachable(&e))?;
        Ok(con)
    }

    fn unreachable(&self, e: &RedisError) -> LinkError {
        LinkError::Unreachable {
            url: self.shown.clone(),
            timeout: self.opts.connect_timeout,
            msg: e.to_string(),
        }
    }
}

/// A connection that reconnects: dropped on an I/O error, re-made (with backoff) on the next call.
pub(crate) struct Link {
    pub(crate) ep: Endpoint,
    con: Option<Connection>,
    /// The run id of the server last connected to.
    pub(crate) run_id: Option<String>,
    /// Bumped each time a reconnection finds a different run id (Redis restarted).
    pub(crate) epoch: u64,
    backoff: Duration,
    last_ok: Option<Instant>,
    /// Replies of commands sent with [`Link::send_nowait`] not yet read.
    unread: usize,
}

/// Whether an error means the connection is gone (vs. a command error).
pub(crate) fn is_conn_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal()
}

impl Link {
    pub(crate) fn new(ep: Endpoint) -> Self {
        Link {
            ep,
            con: None,
            run_id: None,
            epoch: 0,
            backoff: Duration::from_millis(10),
            last_ok: None,
            unread: 0,
        }
    }

    /// Sends `packed` (`replies` replies expected) without waiting for them; they are read (and
    /// ignored, unless the connection broke) before the next command on this link.
    pub(crate) fn send_nowait(
        &mut self,
        during: &'static str,
        deadline: Option<Instant>,
        packed: &[u8],
        replies: usize,
    ) -> Result<(), LinkError> {
        let con = self.con(deadline)?;
        match con.send_packed_command(packed) {
            Ok(()) => {
                self.unread += replies;
                Ok(())
            }
            Err(e) => {
                self.drop_con();
                Err(LinkError::ConnectionLost {
                    during,
                    msg: e.to_string(),
                })
            }
        }
    }

    /// Reads one reply of a command sent with `send_nowait(.., 0)` (the caller counts those);
    /// `None` without a connection.
    pub(crate) fn recv_reply(&mut self) -> Option<redis::RedisResult<Value>> {
        let r = self.con.as_mut()?.recv_response();
        if r.is_ok() {
            self.last_ok = Some(Instant::now());
        }
        Some(r)
    }

    /// Whether the connection answered within the last 500 ms (else [`Link::fresh`] pings it).
    pub(crate) fn recent(&self) -> bool {
        self.con.is_some()
            && self
                .last_ok
                .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
    }

    /// Before a call that must not be sent twice: if the connection has been quiet for a while
    /// it may have died unnoticed (Redis restarted), so check it with an idempotent PING first.
    pub(crate) fn fresh(&mut self, deadline: Option<Instant>) -> Result<(), LinkError> {
        if self.recent() {
            return Ok(());
        }
        self.retry("ping", deadline, |c| redis::cmd("PING").query::<()>(c))
    }

    /// A live connection, connecting (with backoff) until `deadline` (`None`: keep trying).
    pub(crate) fn con(&mut self, deadline: Option<Instant>) -> Result<&mut Connection, LinkError> {
        if self.con.is_none() {
            loop {
                match self.ep.connect_once().and_then(|mut c| {
                    let id = run_id(&mut c)?;
                    Ok((c, id))
                }) {
                    Ok((c, id)) => {
                        if self.run_id.as_ref().is_some_and(|old| *old != id) {
                            self.epoch += 1;
                            tracing::warn!(target: "multiproc", "redis at {} restarted (new run id)", self.ep.shown);
                        }
                        self.run_id = Some(id);
                        self.con = Some(c);
                        self.last_ok = Some(Instant::now());
                        self.backoff = Duration::from_millis(10);
                        break;
                    }
                    Err(e) => {
                        let now = Instant::now();
                        if deadline.is_some_and(|d| now >= d) {
                            return Err(e);
                        }
                        let mut pause = self.backoff;
                        if let Some(d) = deadline {
                            pause = pause.min(d - now);
                        }
                        std::thread::sleep(pause);
                        self.backoff = (self.backoff * 2).min(self.ep.opts.max_backoff);
                    }
                }
            }
        }
        Ok(self.con.as_mut().expect("connected above"))
    }

    /// Whether a connection is open (no attempt is made).
    pub(crate) fn is_connected(&self) -> bool {
        self.con.is_some()
    }

    /// Forget the connection (after an I/O error).
    pub(crate) fn drop_con(&mut self) {
        self.con = None;
        self.unread = 0;
    }

    /// Runs `f` once on a live connection; on a connection error the connection is dropped and
    /// the error returned as [`LinkError::ConnectionLost`] (the call's effect is unknown).
    pub(crate) fn once<R>(
        &mut self,
        during: &'static str,
        deadline: Option<Instant>,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<R>,
    ) -> Result<R, LinkError> {
        self.con(deadline)?;
        while self.unread > 0 {
            let con = self.con.as_mut().expect("connected above");
            match con.recv_response() {
                Ok(_) => self.unread -= 1,
                Err(e) if is_conn_error(&e) => {
                    self.drop_con();
                    return Err(LinkError::ConnectionLost {
                        during,
                        msg: e.to_string(),
                    });
                }
                Err(e) => {
                    self.unread -= 1;
                    tracing::debug!(target: "multiproc", "reply of an unawaited command: {e}");
                }
            }
        }
        let con = self.con.as_mut().expect("connected above");
        match f(con) {
            Ok(r) => {
                self.last_ok = Some(Instant::now());
                Ok(r)
            }
            Err(e) if is_conn_error(&e) => {
                self.drop_con();
                Err(LinkError::ConnectionLost {
                    during,
                    msg: e.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs an idempotent `f`, reconnecting and retrying on connection errors until `deadline`.
    pub(crate) fn retry<R>(
        &mut self,
        during: &'static str,
        deadline: Option<Instant>,
        mut f: impl FnMut(&mut Connection) -> redis::RedisResult<R>,
    ) -> Result<R, LinkError> {
        loop {
            match self.once(during, deadline, &mut f) {
                Err(LinkError::ConnectionLost { .. })
                    if deadline.is_none_or(|d| Instant::now() < d) =>
                {
                    continue;
                }
                other => return other,
            }
        }
    }
}

fn run_id(c: &mut Connection) -> Result<String, LinkError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(c)
        .map_err(LinkError::from)?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap_or("")
        .trim()
        .to_string())
}

// ---- reply parsing (raw `Value`s: the shapes of XREADGROUP / XAUTOCLAIM / XREAD replies) ----

/// One stream entry: its id and its field/value pairs.
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    pub(crate) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
    pub(crate) fn str_field(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(|b| std::str::from_utf8(b).ok())
    }
    pub(crate) fn u64_field(&self, name: &str) -> Option<u64> {
        self.str_field(name).and_then(|s| s.parse().ok())
    }
}

pub(crate) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

pub(crate) fn string(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

/// `[id, [f, v, f, v...]]` (a deleted entry's fields are nil: `None`).
pub(crate) fn entry(v: &Value) -> Option<Entry> {
    let a = array(v)?;
    let id = string(a.first()?)?;
    let fv = array(a.get(1)?)?;
    let mut fields = Vec::with_capacity(fv.len() / 2);
    for pair in fv.chunks(2) {
        if let [k, v] = pair {
            fields.push((bytes(k)?, bytes(v)?));
        }
    }
    Some(Entry { id, fields })
}

/// The entries of an XREAD/XREADGROUP reply (one stream): `[[key, [entry...]]]`, a RESP3 map,
/// or nil.
pub(crate) fn read_reply(v: &Value) -> Vec<Entry> {
    let list = match v {
        Value::Nil => return Vec::new(),
        Value::Map(m) => m.first().and_then(|(_, e)| array(e)),
        other => array(other)
            .and_then(|streams| streams.first())
            .and_then(array)
            .and_then(|s| s.get(1))
            .and_then(array),
    };
    list.map(|l| l.iter().filter_map(entry).collect())
        .unwrap_or_default()
}

/// An XAUTOCLAIM reply: `[next-cursor, [entry...], [deleted-id...]]`.
pub(crate) fn autoclaim_reply(v: &Value) -> (String, Vec<Entry>) {
    let Some(a) = array(v) else {
        return ("0-0".into(), Vec::new());
    };
    let cursor = a.first().and_then(string).unwrap_or_else(|| "0-0".into());
    let entries = a
        .get(1)
        .and_then(array)
        .map(|l| l.iter().filter_map(entry).collect())
        .unwrap_or_default();
    (cursor, entries)
}

/// The delivery count of one pending entry from `XPENDING key group id id 1`.
pub(crate) fn pending_count(v: &Value) -> Option<u64> {
    let rows = array(v)?;
    let row = array(rows.first()?)?;
    match row.get(3)? {
        Value::Int(n) => Some(*n as u64),
        other => string(other)?.parse().ok(),
    }
}

/// Whether a command error is `NOGROUP` (the stream or group vanished, e.g. Redis restarted
/// without persistence).
pub(crate) fn is_nogroup(e: &LinkError) -> bool {
    e.is_code("NOGROUP")
}

/// `XGROUP CREATE key group 0 MKSTREAM`, ignoring `BUSYGROUP` (it exists).
pub(crate) fn ensure_group(
    link: &mut Link,
    key: &str,
    group: &str,
    deadline: Option<Instant>,
) -> Result<(), LinkError> {
    let r = link.retry("creating the consumer group", deadline, |c| {
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query::<Value>(c)
    });
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_code("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

/// `XACK` + `XDEL` of one entry in one `MULTI` (atomic).
pub(crate) fn ack_del(pipe: &mut redis::Pipeline, key: &str, group: &str, id: &str) {
    pipe.cmd("XACK").arg(key).arg(group).arg(id).ignore();
    pipe.cmd("XDEL").arg(key).arg(id).ignore();
}

const FORGET_CONSUMER_LUA: &str = r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"#;

/// Removes `consumer` from the group if (atomically) it holds no pending entries; best effort,
/// only over an open connection (never waits for a connect).
pub(crate) fn forget_consumer(link: &mut Link, key: &str, group: &str, consumer: &str) {
    if !link.is_connected() {
        return;
    }
    let _ = link.once("leaving the group", None, |c| {
        redis::cmd("EVAL")
            .arg(FORGET_CONSUMER_LUA)
            .arg(1)
            .arg(key)
            .arg(group)
            .arg(consumer)
            .query::<Value>(c)
    });
}
