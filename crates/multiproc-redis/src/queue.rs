//! `RemoteQueue<T>`: a queue on one Redis stream with one consumer group.
//!
//! `put` is `XADD {mp:NAME}:q * d <postcard bytes>`. Every handle is a consumer of the group `mpq`
//! with its own name; `get` first claims (`XAUTOCLAIM`) an entry some consumer has held unacked for
//! longer than [`Options::claim_idle`], then reads a new one (`XREADGROUP ... BLOCK`). `ack` is
//! `XACK` + `XDEL` in one `MULTI`, so acknowledged entries leave the stream and `qsize` (`XLEN`)
//! counts what is waiting or delivered but not yet acknowledged.
//!
//! Round trips: `put` queues the encoded entry for the handle's writer thread
//! ([`crate::writer`]), which pipelines every waiting `XADD` in one round trip; `get` reads ahead
//! (`XREADGROUP COUNT n`, n ramping from 1 to [`AUTO_MAX`] while entries keep coming) and
//! acknowledges what it handed out with one `XACK` + `XDEL` per read-ahead batch.

use crate::conn::{self, Endpoint, Entry, Link, Options};
use crate::writer::{Acks, Writer, ack_pipe, push_acks};
use crate::{ConnectError, GetError, LinkError, PutError};
use multiproc_shm::deadline::after;
use redis::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(crate) const GROUP: &str = "mpq";
/// The longest single `BLOCK` (so claims of dead consumers' entries are checked this often).
const MAX_BLOCK: Duration = Duration::from_millis(500);
/// How often a busy consumer looks for entries to claim.
const CLAIM_EVERY: Duration = Duration::from_millis(1000);
/// The largest read-ahead of the automatic mode (`Options::prefetch` 0).
pub(crate) const AUTO_MAX: usize = 32;
/// Acknowledgements of `get` are sent at the latest when this many wait.
const MAX_ACKS: usize = 256;

struct Inner {
    ep: Endpoint,
    /// Idle connections: each call takes one (or makes one), so a `get` blocking on one handle
    /// never holds up a `put` on a clone.
    idle: Mutex<Vec<Link>>,
    closed: Mutex<bool>,
    /// Where the next XAUTOCLAIM scan starts (it walks the pending list in slices).
    claim_cursor: Mutex<String>,
    /// When this handle last looked for claimable entries.
    last_claim: Mutex<Option<Instant>>,
    /// Entries read ahead (`XREADGROUP COUNT prefetch`) and not yet handed out, with the time
    /// they were read.
    buf: Mutex<VecDeque<(Instant, Entry)>>,
    /// Ids handed out by `get` (auto-ack) whose `XACK` + `XDEL` is not sent yet: sent when the
    /// read-ahead buffer is drained, with the next read, at `MAX_ACKS`, `flush`, `close`, drop.
    acks: Arc<Acks>,
    /// The read size of the automatic read-ahead (`Options::prefetch` 0): 1, doubled after
    /// each full read up to `AUTO_MAX`, back to 1 after a read that found nothing.
    ahead: Mutex<usize>,
    /// The pipelined `put`'s thread, started by the first `put`.
    writer: Mutex<Option<Writer>>,
    key: String,
    consumer: String,
    opts: Options,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection borrowed from [`Inner::idle`], given back on drop.
struct Lease<'a> {
    link: Option<Link>,
    inner: &'a Inner,
}

impl std::ops::Deref for Lease<'_> {
    type Target = Link;
    fn deref(&self) -> &Link {
        self.link.as_ref().expect("leased")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Link {
        self.link.as_mut().expect("leased")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.link.take()
            && !*lock(&self.inner.closed)
        {
            lock(&self.inner.idle).push(l);
        }
    }
}

/// Gives back read-ahead entries this consumer still owns: each is added again at the end of the
/// stream (same fields, a new id) and the original acknowledged and deleted, atomically, so a
/// consumer blocked in `XREADGROUP` gets it at once (not after `claim_idle`, nor after its next
/// claim scan).
const RELEASE_LUA: &str = r#"
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    if e[1] then
      redis.call('XADD', KEYS[1], '*', unpack(e[1][2]))
    end
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
  end
end
return 0
"#;

impl Inner {
    /// Releases the read-ahead buffer (see [`RELEASE_LUA`]); best effort, over `link` if it is
    /// connected.
    fn release(&self, link: &mut Link) {
        let ids: Vec<String> = lock(&self.buf).drain(..).map(|(_, e)| e.id).collect();
        if !link.is_connected() {
            return;
        }
        let deadline = after(self.opts.io_timeout);
        let _ = self.send_acks(link, true);
        if ids.is_empty() {
            return;
        }
        let _ = link.once("releasing read-ahead entries", deadline, |c| {
            redis::cmd("EVAL")
                .arg(RELEASE_LUA)
                .arg(1)
                .arg(&self.key)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(&ids)
                .query::<Value>(c)
        });
    }

    /// Sends the pending acknowledgements of `get` (`XACK` + `XDEL` of every id, in one `MULTI`):
    /// `wait` reads the reply now, else it is read with the link's next command.
    fn send_acks(&self, link: &mut Link, wait: bool) -> Result<(), LinkError> {
        let ids = self.acks.take(false);
        if ids.is_empty() {
            return Ok(());
        }
        let p = ack_pipe(&self.key, &ids);
        let deadline = after(self.opts.connect_timeout);
        let r = if wait {
            // Idempotent: safe to send again after a lost connection.
            link.retry("ack", deadline, |c| p.query::<()>(c))
        } else {
            // MULTI, XACK, XDEL, EXEC: four replies.
            link.send_nowait("ack", deadline, &p.get_packed_pipeline(), 4)
        };
        if let Err(e) = &r {
            // The items are in hand; their entries may be delivered again after claim_idle.
            tracing::warn!(target: "multiproc", "remote queue: {} acknowledgements failed: {e}", ids.len());
        }
        r
    }

    /// This handle's writer thread (started if need be; a writer inherited through a fork is
    /// replaced: its thread is not in this process).
    fn writer(&self) -> Result<MutexGuard<'_, Option<Writer>>, PutError> {
        let mut w = lock(&self.writer);
        if !w.as_ref().is_some_and(Writer::is_ours) {
            drop(w.take());
            *w = Some(Writer::start(
                self.ep.clone(),
                self.key.clone(),
                self.acks.clone(),
            )?);
        }
        Ok(w)
    }

    /// How many entries one read takes.
    fn read_count(&self) -> usize {
        match self.opts.prefetch {
            0 => *lock(&self.ahead),
            n => n,
        }
    }

    /// The automatic read-ahead after a read of `count` that returned `got` entries.
    fn ramp(&self, count: usize, got: usize) {
        if self.opts.prefetch != 0 {
            return;
        }
        let mut a = lock(&self.ahead);
        if got == 0 {
            *a = 1;
        } else if got >= count {
            *a = (count * 2).min(AUTO_MAX);
        }
    }

    /// Waits (bounded) until this handle's earlier `put`s are stored, so its own reads see them;
    /// errors stay for the next `put`/`flush`.
    fn settle_puts(&self) {
        if let Some(w) = lock(&self.writer).as_ref()
            && w.is_ours()
            && w.busy()
        {
            let _ = w.flush(false);
        }
    }
}

impl Drop for Inner {
    /// The last handle: store what was put (a bounded wait), give back the read-ahead entries,
    /// send the pending acknowledgements, then leave the group if this consumer holds nothing
    /// (else its entries stay pending for others to claim).
    fn drop(&mut self) {
        drop(lock(&self.writer).take());
        let mut idle = std::mem::take(&mut *lock(&self.idle));
        if let Some(link) = idle.iter_mut().find(|l| l.is_connected()) {
            self.release(link);
            conn::forget_consumer(link, &self.key, GROUP, &self.consumer);
        }
    }
}

impl Inner {
    /// A link of this handle's (`None` once the handle is closed).
    fn lease(&self) -> Option<Lease<'_>> {
        if *lock(&self.closed) {
            return None;
        }
        let link = lock(&self.idle)
            .pop()
            .unwrap_or_else(|| Link::new(self.ep.clone()));
        Some(Lease {
            link: Some(link),
            inner: self,
        })
    }
}

/// A queue shared by every process (on any host) that connects to the same Redis and name.
///
/// Items are encoded with postcard; the encoded size is checked against
/// [`Options::max_message`] before anything is sent.
pub struct RemoteQueue<T> {
    inner: Arc<Inner>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for RemoteQueue<T> {
    /// Another handle on the same connection and consumer name.
    fn clone(&self) -> Self {
        RemoteQueue {
            inner: self.inner.clone(),
            _t: PhantomData,
        }
    }
}

/// An item received with [`RemoteQueue::get_delivery`]: it stays pending in Redis until
/// [`Delivery::ack`]. Dropped without `ack` (or the process dies), it is delivered again to some
/// consumer once it has been idle for [`Options::claim_idle`].
pub struct Delivery<T> {
    value: T,
    id: String,
    inner: Arc<Inner>,
}

impl<T> Delivery<T> {
    /// The item.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The stream entry id (unique per put).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Acknowledges the entry (it will not be delivered again) and returns the item.
    /// On [`LinkError::ConnectionLost`] the acknowledgement may not have happened: the item may
    /// come back.
    pub fn ack(self) -> Result<T, GetError> {
        let inner = &self.inner;
        let mut link = inner.lease().ok_or(GetError::Closed)?;
        let deadline = after(
            inner
                .opts
                .io_timeout
                .saturating_add(inner.opts.connect_timeout),
        );
        // XACK + XDEL are idempotent: retrying after a lost connection is safe.
        link.retry("ack", deadline, |c| {
            let mut p = redis::pipe();
            p.atomic();
            conn::ack_del(&mut p, &inner.key, GROUP, &self.id);
            p.query::<()>(c)
        })?;
        drop(link);
        Ok(self.value)
    }
}

impl<T> std::ops::Deref for Delivery<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("value", &self.value)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> RemoteQueue<T> {
    /// Connects to the queue `name` at `url` (`redis://[user:pass@]host[:port][/db]`, or
    /// `rediss://` with the `tls` feature) with default [`Options`]. Fails within
    /// [`Options::connect_timeout`] if Redis cannot be reached.
    pub fn connect(url: &str, name: &str) -> Result<Self, ConnectError> {
        Self::connect_with(url, name, Options::default())
    }

    /// [`RemoteQueue::connect`] with options.
    pub fn connect_with(url: &str, name: &str, opts: Options) -> Result<Self, ConnectError> {
        let ep = Endpoint::new(url, opts.clone())?;
        let mut link = Link::new(ep.clone());
        // One attempt: an unreachable URL fails now, within connect_timeout.
        let deadline = Some(Instant::now());
        link.con(deadline)?;
        let key = crate::key(name, "q");
        conn::ensure_group(&mut link, &key, GROUP, deadline)?;
        Ok(RemoteQueue {
            inner: Arc::new(Inner {
                ep,
                idle: Mutex::new(vec![link]),
                closed: Mutex::new(false),
                claim_cursor: Mutex::new("0-0".into()),
                last_claim: Mutex::new(None),
                buf: Mutex::new(VecDeque::new()),
                acks: Arc::new(Acks::new(opts.claim_idle)),
                ahead: Mutex::new(1),
                writer: Mutex::new(None),
                key,
                consumer: crate::unique_id("q"),
                opts,
            }),
            _t: PhantomData,
        })
    }

    /// This handle's consumer name in the group.
    pub fn consumer_name(&self) -> &str {
        &self.inner.consumer
    }

    /// Puts an item, pipelined: the item is encoded and its size checked here (an oversized item
    /// is refused with `TooLarge`, nothing sent), then queued for this handle's writer thread,
    /// which sends every waiting item in one round trip; `put` does not wait for Redis.
    ///
    /// Errors of earlier `put`s come back here: an `Err` means this item was **not** queued, and
    /// (unless `TooLarge`/`Codec`/`Closed`/`Timeout`) that some item put before it may not be
    /// stored (`Unreachable`: every item waiting then was dropped; `ConnectionLost`: the batch on
    /// the wire may be stored in part; `Redis`: Redis refused an `XADD`). Each error is reported
    /// once, by the first of `put`, [`flush`](Self::flush) or [`close`](Self::close) to see it
    /// (drop logs it). `put` waits only when 8192 items (or 16 MiB) are queued, and returns
    /// `Timeout` if no batch completes within `2 * connect_timeout + io_timeout`.
    /// Use [`put_confirmed`](Self::put_confirmed) to wait for one item to be stored.
    pub fn put(&self, item: &T) -> Result<(), PutError> {
        let bytes = encode(item, &self.inner.opts)?;
        if *lock(&self.inner.closed) {
            return Err(PutError::Closed);
        }
        let w = self.inner.writer()?;
        w.as_ref().expect("started").push(bytes)
    }

    /// Waits until every item this handle `put` so far is stored in Redis (and sends the pending
    /// acknowledgements of `get`), then returns the first error not yet reported (see
    /// [`put`](Self::put)). Never waits forever: returns `Timeout` when no batch completes
    /// within `2 * connect_timeout + io_timeout` (the items stay queued; a later `flush` waits
    /// again). With Redis gone, the writer gives up after `connect_timeout` and `flush` returns
    /// `Unreachable` (or `ConnectionLost`).
    pub fn flush(&self) -> Result<(), PutError> {
        let r = self.flush_puts();
        let acked = match self.inner.lease() {
            Some(mut link) if !self.inner.acks.is_empty() => self
                .inner
                .send_acks(&mut link, true)
                .map_err(PutError::from),
            _ => Ok(()),
        };
        r.and(acked)
    }

    /// `flush` of the puts only (errors taken).
    fn flush_puts(&self) -> Result<(), PutError> {
        match lock(&self.inner.writer).as_ref() {
            Some(w) if w.is_ours() => w.flush(true),
            _ => Ok(()),
        }
    }

    /// Puts an item and returns once Redis stored it (what `put` did before it was pipelined):
    /// earlier `put`s are flushed first (their error, if any, is returned and this item not
    /// sent). On [`LinkError::ConnectionLost`] the item may or may not have been stored.
    pub fn put_confirmed(&self, item: &T) -> Result<(), PutError> {
        let bytes = encode(item, &self.inner.opts)?;
        self.flush_puts()?;
        let mut link = self.inner.lease().ok_or(PutError::Closed)?;
        let deadline = after(self.inner.opts.connect_timeout);
        link.fresh(deadline)?;
        link.once("put", deadline, |c| {
            redis::cmd("XADD")
                .arg(&self.inner.key)
                .arg("*")
                .arg("d")
                .arg(&bytes)
                .query::<Value>(c)
        })?;
        Ok(())
    }

    /// Puts every item of `items`, pipelined: one round trip per 256 items (`XADD`s in one
    /// write), each item refused with `TooLarge` before anything is sent. On
    /// [`LinkError::ConnectionLost`] any suffix of the batch may be missing; earlier chunks are stored.
    /// Earlier `put`s are flushed first (their error, if any, is returned and nothing sent).
    /// Returns once every item is stored.
    pub fn put_many<'a>(&self, items: impl IntoIterator<Item = &'a T>) -> Result<(), PutError>
    where
        T: 'a,
    {
        const CHUNK: usize = 256;
        let encoded: Vec<Vec<u8>> = items
            .into_iter()
            .map(|item| encode(item, &self.inner.opts))
            .collect::<Result<_, _>>()?;
        self.flush_puts()?;
        let mut link = self.inner.lease().ok_or(PutError::Closed)?;
        for chunk in encoded.chunks(CHUNK) {
            let deadline = after(self.inner.opts.connect_timeout);
            link.fresh(deadline)?;
            let mut p = redis::pipe();
            for bytes in chunk {
                p.cmd("XADD")
                    .arg(&self.inner.key)
                    .arg("*")
                    .arg("d")
                    .arg(bytes)
                    .ignore();
            }
            link.once("put", deadline, |c| p.query::<()>(c))?;
        }
        Ok(())
    }

    /// Gets an item, waiting as long as it takes (reconnecting if Redis goes away), and
    /// acknowledges it (at-most-once from then on, once the acknowledgement is sent).
    ///
    /// Acknowledgements are batched: the ids wait in the handle and go out together (one
    /// `XACK` + `XDEL`) in the same round trip as the handle's next read from Redis — so the
    /// items of one read-ahead batch are acknowledged by the read that follows it — or, if no
    /// read comes, from the handle's writer thread about `min(claim_idle / 4, 250 ms)` (at most
    /// twice that) after the oldest was handed out; at once when 256 wait; and by
    /// [`qsize`](Self::qsize), [`flush`](Self::flush), [`close`](Self::close) and drop.
    /// The wider window this trades for: an item `get` returned is delivered again (to another
    /// consumer, after `claim_idle`) if this process dies before its acknowledgement went out.
    pub fn get(&self) -> Result<T, GetError> {
        self.recv(None)?.ack_quietly()
    }

    /// [`RemoteQueue::get`] waiting at most `timeout` ([`GetError::Timeout`]).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.recv(after(timeout))?.ack_quietly()
    }

    /// Gets an item without acknowledging it (at-least-once): call [`Delivery::ack`] when done.
    pub fn get_delivery(&self) -> Result<Delivery<T>, GetError> {
        self.recv(None)
    }

    /// [`RemoteQueue::get_delivery`] waiting at most `timeout` ([`GetError::Timeout`]).
    pub fn get_delivery_timeout(&self, timeout: Duration) -> Result<Delivery<T>, GetError> {
        self.recv(after(timeout))
    }

    /// Entries waiting or delivered and not yet acknowledged (`XLEN`), after this handle's own
    /// `put`s are stored (a bounded wait; their errors stay for the next `put`/`flush`) and with
    /// its pending acknowledgements sent first (in the same round trip).
    pub fn qsize(&self) -> Result<usize, GetError> {
        let inner = &self.inner;
        inner.settle_puts();
        let mut link = inner.lease().ok_or(GetError::Closed)?;
        let mut acks = PendingAcks {
            ids: inner.acks.take(false),
            acks: &inner.acks,
        };
        let deadline = after(inner.opts.connect_timeout);
        let n = link.retry("qsize", deadline, |c| {
            let mut p = redis::pipe();
            push_acks(&mut p, &inner.key, &acks.ids);
            p.cmd("XLEN").arg(&inner.key);
            p.query::<(usize,)>(c).map(|n| n.0)
        });
        let n = match n {
            Err(e) if conn::is_nogroup(&e) => {
                // The group is gone (Redis restarted empty): nothing left to acknowledge.
                acks.ids.clear();
                link.retry("qsize", deadline, |c| {
                    redis::cmd("XLEN").arg(&inner.key).query::<usize>(c)
                })?
            }
            other => other?,
        };
        acks.ids.clear();
        Ok(n)
    }

    /// Whether [`RemoteQueue::qsize`] is 0.
    pub fn empty(&self) -> Result<bool, GetError> {
        Ok(self.qsize()? == 0)
    }

    /// Closes this handle (every clone): later calls return `Closed`. What was `put`
    /// is stored first (a bounded wait, as [`flush`](Self::flush)), the read-ahead entries are
    /// given back and the pending acknowledgements sent; returns the first error of the puts not
    /// yet reported. The queue itself stays in Redis for the other handles; see
    /// [`RemoteQueue::destroy`].
    pub fn close(&self) -> Result<(), PutError> {
        let w = lock(&self.inner.writer).take();
        let r = match w {
            Some(mut w) if w.is_ours() => w.shutdown(),
            _ => Ok(()),
        };
        *lock(&self.inner.closed) = true;
        let mut idle = std::mem::take(&mut *lock(&self.inner.idle));
        if let Some(link) = idle.iter_mut().find(|l| l.is_connected()) {
            self.inner.release(link);
        }
        lock(&self.inner.buf).clear();
        r
    }

    /// Deletes the queue's keys from Redis (every item, every consumer) and closes this handle.
    pub fn destroy(&self) -> Result<(), PutError> {
        self.inner.settle_puts();
        let mut link = self.inner.lease().ok_or(PutError::Closed)?;
        let deadline = after(self.inner.opts.connect_timeout);
        link.retry("destroy", deadline, |c| {
            redis::cmd("DEL").arg(&self.inner.key).query::<()>(c)
        })?;
        drop(link);
        let _ = self.inner.acks.take(false);
        let _ = self.close();
        Ok(())
    }

    fn recv(&self, deadline: Option<Instant>) -> Result<Delivery<T>, GetError> {
        let inner = &self.inner;
        let claim_ms = inner.opts.claim_idle.as_millis().max(1) as u64;
        // Claims are looked for when a read came back empty, and at least every CLAIM_EVERY
        // (capped by claim_idle / 2) while entries keep coming: not on every get (a round trip).
        let claim_every = CLAIM_EVERY.min(inner.opts.claim_idle / 2);
        let mut idle_round = false;
        // Read-ahead entries first (those buffered too long are left to be claimed).
        {
            let stale = inner.opts.claim_idle / 2;
            let mut buf = lock(&inner.buf);
            while let Some((at, e)) = buf.pop_front() {
                if at.elapsed() < stale {
                    drop(buf);
                    return self.decode(e);
                }
            }
        }
        inner.settle_puts();
        let mut link = inner.lease().ok_or(GetError::Closed)?;
        // What was handed out before is acknowledged in the same round trip as the read below
        // (put back if this call returns before that read succeeds).
        let mut acks = PendingAcks {
            ids: inner.acks.take(false),
            acks: &inner.acks,
        };
        loop {
            if *lock(&inner.closed) {
                return Err(GetError::Closed);
            }
            let now = Instant::now();
            // Without a deadline the item may take forever, but an outage may not.
            let conn_deadline = deadline.or(now.checked_add(inner.opts.outage_timeout));
            let due =
                idle_round || lock(&inner.last_claim).is_none_or(|t| t.elapsed() >= claim_every);
            idle_round = true;
            // 1. An entry a (dead) consumer has held for longer than claim_idle.
            let cursor = lock(&inner.claim_cursor).clone();
            let r = if due {
                *lock(&inner.last_claim) = Some(now);
                Some(link.retry("get", conn_deadline, |c| {
                    redis::cmd("XAUTOCLAIM")
                        .arg(&inner.key)
                        .arg(GROUP)
                        .arg(&inner.consumer)
                        .arg(claim_ms)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(inner.read_count())
                        .query::<Value>(c)
                }))
            } else {
                None
            };
            let v = match r {
                None => Value::Nil,
                Some(Err(e)) if conn::is_nogroup(&e) => {
                    conn::ensure_group(&mut link, &inner.key, GROUP, conn_deadline)?;
                    continue;
                }
                Some(other) => other?,
            };
            let (next, claimed) = if due {
                conn::autoclaim_reply(&v)
            } else {
                (cursor, Vec::new())
            };
            *lock(&inner.claim_cursor) = next;
            let mut claimed = claimed.into_iter();
            if let Some(e) = claimed.next() {
                drop(link);
                let at = Instant::now();
                lock(&inner.buf).extend(claimed.map(|e| (at, e)));
                return self.decode(e);
            }
            // 2. A new entry, blocking in slices of at most MAX_BLOCK (past the deadline: one
            // non-blocking read, so `get_timeout(0)` still takes what is there).
            let mut block = Some(MAX_BLOCK.min(inner.opts.claim_idle));
            if let Some(d) = deadline {
                block = if now >= d {
                    None
                } else {
                    block.map(|b| b.min(d - now))
                };
            }
            let io = inner.opts.io_timeout;
            let count = inner.read_count();
            let r = link.retry("get", conn_deadline, |c| {
                c.set_read_timeout(Some(block.unwrap_or_default().saturating_add(io)))?;
                let mut p = redis::pipe();
                push_acks(&mut p, &inner.key, &acks.ids);
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(GROUP)
                    .arg(&inner.consumer)
                    .arg("COUNT")
                    .arg(count);
                if let Some(b) = block {
                    cmd.arg("BLOCK").arg(b.as_millis().max(1) as u64);
                }
                cmd.arg("STREAMS").arg(&inner.key).arg(">");
                p.add_command(cmd);
                let v = p.query::<Vec<Value>>(c);
                c.set_read_timeout(Some(io))?;
                v.map(|v| v.into_iter().next().unwrap_or(Value::Nil))
            });
            let v = match r {
                Err(e) if conn::is_nogroup(&e) => {
                    conn::ensure_group(&mut link, &inner.key, GROUP, conn_deadline)?;
                    continue;
                }
                other => other?,
            };
            acks.ids.clear(); // sent with the read
            let got = conn::read_reply(&v);
            inner.ramp(count, got.len());
            let mut got = got.into_iter();
            if let Some(e) = got.next() {
                drop(link);
                let at = Instant::now();
                lock(&inner.buf).extend(got.map(|e| (at, e)));
                return self.decode(e);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(GetError::Timeout);
            }
        }
    }

    fn decode(&self, e: Entry) -> Result<Delivery<T>, GetError> {
        let value = e
            .field("d")
            .ok_or_else(|| "entry without a d field".to_string())
            .and_then(|b| postcard::from_bytes::<T>(b).map_err(|e| e.to_string()));
        let d = Delivery {
            value: (),
            id: e.id,
            inner: self.inner.clone(),
        };
        match value {
            Ok(value) => Ok(Delivery {
                value,
                id: d.id,
                inner: d.inner,
            }),
            Err(msg) => {
                // A poison entry would come back forever: drop it and say so.
                let _ = d.ack();
                Err(GetError::Codec(format!(
                    "undecodable queue entry dropped: {msg}"
                )))
            }
        }
    }
}

impl<T> Delivery<T> {
    /// The auto-ack of `get`, batched: the id joins the handle's pending acknowledgements, sent
    /// (one `XACK` + `XDEL` for all) in the same round trip as the handle's next read, i.e.
    /// once the read-ahead buffer is drained (one per read-ahead batch); by the writer thread
    /// (the timer) if they wait longer than `Acks::delay`; at once (reply read with the next
    /// command on that connection) when `MAX_ACKS` wait.
    fn ack_quietly(self) -> Result<T, GetError> {
        let inner = &self.inner;
        let n = inner.acks.push(self.id.clone());
        if n >= MAX_ACKS {
            // An error is logged by send_acks; the item is in hand either way.
            if let Some(mut link) = inner.lease() {
                let _ = inner.send_acks(&mut link, false);
            }
        } else if let Err(e) = inner.writer() {
            // No timer: send now rather than risk a redelivery.
            tracing::debug!(target: "multiproc", "remote queue: {e}");
            if let Some(mut link) = inner.lease() {
                let _ = inner.send_acks(&mut link, false);
            }
        }
        Ok(self.value)
    }
}

/// Encodes one item and checks its size against `max_message`.
fn encode<T: Serialize>(item: &T, opts: &Options) -> Result<Vec<u8>, PutError> {
    let bytes = postcard::to_allocvec(item).map_err(|e| PutError::Codec(e.to_string()))?;
    opts.check_size(bytes.len(), |size, max| PutError::TooLarge { size, max })?;
    Ok(bytes)
}

/// Acknowledgements taken to go with a read; given back to the handle unless sent.
struct PendingAcks<'a> {
    ids: Vec<String>,
    acks: &'a Acks,
}

impl Drop for PendingAcks<'_> {
    fn drop(&mut self) {
        if !self.ids.is_empty() {
            self.acks.restore(std::mem::take(&mut self.ids));
        }
    }
}

impl<T> std::fmt::Debug for RemoteQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteQueue")
            .field("key", &self.inner.key)
            .field("consumer", &self.inner.consumer)
            .field("url", &self.inner.ep.shown)
            .finish()
    }
}
