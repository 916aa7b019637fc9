//! The byte layout of the embedded store's records and log entries.
//! Integers are big-endian; a change here needs a new `FORMAT_VERSION`.

use crate::store::{Event, EventKind, KeyValue, Revision, StoreError, StoreResult};

/// A key's stored record.
pub(super) struct Record {
    pub(super) create_revision: Revision,
    pub(super) mod_revision: Revision,
    pub(super) value: Vec<u8>,
}

impl Record {
    /// Layout: create revision (u64 BE), mod revision (u64 BE), value.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.value.len());
        out.extend_from_slice(&self.create_revision.to_be_bytes());
        out.extend_from_slice(&self.mod_revision.to_be_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    pub(super) fn decode(raw: &[u8]) -> StoreResult<Self> {
        let mut r = Reader(raw);
        let decoded = (|| {
            let create_revision = r.u64()?;
            let mod_revision = r.u64()?;
            Some(Self {
                create_revision,
                mod_revision,
                value: r.0.to_vec(),
            })
        })();
        decoded.ok_or_else(|| StoreError::Backend("embedded store: corrupt key record".into()))
    }

    pub(super) fn into_kv(self, key: String) -> KeyValue {
        KeyValue {
            key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

/// Layout: count (u32 BE), then per event: kind (0 put, 1 delete), create
/// revision (u64 BE), key length (u32 BE), key, value length (u32 BE), value.
/// The mod revision is the entry's revision.
pub(super) fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    push_len(&mut out, events.len());
    for e in events {
        out.push(match e.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        out.extend_from_slice(&e.kv.create_revision.to_be_bytes());
        push_len(&mut out, e.kv.key.len());
        out.extend_from_slice(e.kv.key.as_bytes());
        push_len(&mut out, e.kv.value.len());
        out.extend_from_slice(&e.kv.value);
    }
    out
}

/// Lengths are u32; redb refuses values near 4 GiB long before this saturates.
fn push_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

pub(super) fn decode_events(raw: &[u8], revision: Revision) -> StoreResult<Vec<Event>> {
    let mut r = Reader(raw);
    let decoded = (|| {
        let count = r.u32()?;
        let mut events = Vec::new();
        for _ in 0..count {
            let kind = match r.u8()? {
                0 => EventKind::Put,
                1 => EventKind::Delete,
                _ => return None,
            };
            let create_revision = r.u64()?;
            let key_len = r.u32()?;
            let key = String::from_utf8(r.take(key_len)?.to_vec()).ok()?;
            let value_len = r.u32()?;
            let value = r.take(value_len)?.to_vec();
            events.push(Event {
                kind,
                kv: KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: revision,
                },
            });
        }
        Some(events)
    })();
    decoded.ok_or_else(|| {
        StoreError::Backend(format!(
            "embedded store: corrupt watch log entry at revision {revision}"
        ))
    })
}

/// A cursor over encoded bytes; `None` when the bytes run out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: u32) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}
