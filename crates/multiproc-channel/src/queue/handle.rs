//! Serialization of a queue handle: its segments' handles, its role, and the registration loan
//! that keeps it counted while in flight.

use super::{Queue, QueueCtl, QueueOf};
use crate::codec::{Codec, note_handle_error};
use crate::peers::{self, Role};
use multiproc_ring::MpmcRing;
use multiproc_shm::{SegmentHandle, Shared, TypeFingerprint};
use serde::{Deserialize, Serialize};

/// What a queue serializes as.
#[derive(Serialize, Deserialize)]
struct QueueHandle {
    ctl: SegmentHandle,
    ring: SegmentHandle,
    joinable: bool,
    /// Bit 0: producer, bit 1: consumer.
    role: u8,
    /// The serializer's loan (table index, its identity word): the deserializer repays it once
    /// registered, so the handle counts while in flight.
    loan: Option<(u32, u64)>,
}

fn role_bits(r: Role) -> u8 {
    u8::from(r.tx) | (u8::from(r.rx) << 1)
}

fn role_of(b: u8) -> Role {
    Role {
        tx: b & 1 != 0,
        rx: b & 2 != 0,
    }
}

impl<T: 'static, C: Codec<T>> Serialize for Queue<T, C> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let ring = self
            .sh
            .ring
            .handle()
            .ok_or_else(|| S::Error::custom("a heap queue cannot be sent"))?;
        let ctl = self
            .sh
            .ctl
            .handle()
            .ok_or_else(|| S::Error::custom("a heap queue cannot be sent"))?;
        self.check_adopted();
        let role = if self.closed { Role::BOTH } else { self.role };
        let loan = self.sh.local.lend(&self.ctl().peers, role);
        QueueHandle {
            ctl,
            ring,
            joinable: self.joinable,
            role: role_bits(role),
            loan,
        }
        .serialize(s)
    }
}

impl<'de, T: 'static, C: Codec<T>> Deserialize<'de> for Queue<T, C> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let h = QueueHandle::deserialize(d)?;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            // postcard drops a custom error's text: keep it where the codec reports it.
            D::Error::custom(note_handle_error(format!("queue handle ({what}): {e}")))
        };
        let ctl = Shared::<QueueCtl>::open_handle(&h.ctl, TypeFingerprint::of::<QueueOf<T, C>>())
            .map_err(|e| fail("control block", &e))?;
        let ring = MpmcRing::open_handle(&h.ring).map_err(|e| fail("ring", &e))?;
        let role = role_of(h.role);
        let q = Queue::from_parts(ctl, ring, h.joinable, role).map_err(|e| fail("geometry", &e))?;
        if let Some((idx, owner)) = h.loan {
            peers::repay(&q.ctl().peers, idx, owner, role);
        }
        Ok(q)
    }
}
