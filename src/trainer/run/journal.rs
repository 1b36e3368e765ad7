//! The journal: an append-only file of length-prefixed, checksummed entries, one per event (commit, tag,
//! rollback, state stored, prune), written in groups that each end with a `durable` marker.
//!
//! ```text
//! file   = MAGIC entry*
//! entry  = len: u32 LE | !len: u32 LE | xxh3-64(payload): u64 LE | payload (len bytes)
//! payload = meta_len: u32 LE | meta (JSON, `Meta`) | extra (a commit's record as JSON, else empty)
//! ```
//!
//! Reading stops at the end of the last complete group. What follows it is the torn tail of a process that
//! died mid-append: a cut entry, a zero-filled tail, a bad checksum on the file's last entry, or complete
//! entries of a group whose `durable` marker never made it. Anything else that does not check out, with more
//! entries after it, is damage: [`Error::JournalCorrupt`] with the entry's offset, and nothing is truncated.

use std::path::Path;

use serde::{Deserialize, Serialize};
use twox_hash::XxHash3_64;

use crate::checkpoint::metadata::VariableRecord;
use crate::error::{Error, Result};

/// The journal's first bytes.
pub(crate) const MAGIC: &[u8; 8] = b"PSJRNL1\n";
/// Bytes before an entry's payload.
const ENTRY_HEADER: usize = 16;

/// One event, as its JSON meta.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Meta {
    /// A committed version: its parent, fingerprint, whether a record follows the meta, and the digests of the
    /// variables whose value differs from the parent's (`changed`, path and digest in hex) or that the parent
    /// has and it has not (`removed`). Version 0 lists every variable.
    Commit {
        v: u64,
        parent: Option<u64>,
        fp: String,
        record: bool,
        changed: Vec<(String, String)>,
        removed: Vec<String>,
    },
    /// `name` now names version `v`.
    Tag { name: String, v: u64 },
    /// The head moved back to `v`.
    Rollback { v: u64 },
    /// The state of `v` is stored: every object it names was durable before this entry was written.
    Stored { v: u64, manifest: Manifest },
    /// The stored states of these versions were dropped by the on-disk retention (their objects may be swept).
    Prune { versions: Vec<u64> },
    /// The end of a group: everything before it is durable, and `head` is the head.
    Durable { head: u64 },
}

/// What a stored state needs besides its values: floatx, seed, and every variable's spec and digest in
/// creation order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Manifest {
    pub(crate) floatx: String,
    pub(crate) seed: [u32; 2],
    pub(crate) fingerprint: String,
    pub(crate) variables: Vec<VariableRecord>,
    /// The digest of each variable's value, in the order of `variables` (32 hex digits each).
    pub(crate) digests: Vec<String>,
}

impl Manifest {
    /// The digests as numbers.
    pub(crate) fn digest_values(&self) -> Vec<u128> {
        self.digests.iter().map(|d| u128::from_str_radix(d, 16).unwrap_or(0)).collect()
    }
}

/// One decoded entry: its offset in the file, meta, and extra bytes.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) offset: u64,
    pub(crate) meta: Meta,
    pub(crate) extra: Vec<u8>,
}

/// Appends the entry of `meta` (and `extra`) to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, meta: &Meta, extra: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; ENTRY_HEADER]);
    out.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *out, meta).expect("a meta of strings and numbers always serializes");
    let meta_len = (out.len() - start - ENTRY_HEADER - 4) as u32;
    out[start + ENTRY_HEADER..start + ENTRY_HEADER + 4].copy_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(extra);
    let len = (out.len() - start - ENTRY_HEADER) as u32;
    let sum = XxHash3_64::oneshot(&out[start + ENTRY_HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&(!len).to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&sum.to_le_bytes());
}

/// What [`scan`] found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// The entries of every complete group, in order.
    pub(crate) entries: Vec<Decoded>,
    /// The length of the file up to the end of the last complete group.
    pub(crate) valid_len: u64,
    /// The bytes after it (a torn tail): 0 when the file ended cleanly.
    pub(crate) torn_bytes: u64,
}

/// Reads every complete group of `bytes` (a whole journal file named `file`).
///
/// # Errors
/// [`Error::JournalCorrupt`] for a wrong magic, or an entry that does not check out and is not the tail.
pub(crate) fn scan(bytes: &[u8], file: &Path) -> Result<Scan> {
    let corrupt = |offset: usize, reason: String| Error::JournalCorrupt {
        file: file.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt(0, "the file does not start with the journal's magic bytes".into()));
    }
    let mut entries = Vec::new();
    let mut group_start = 0; // index in `entries` of the current group's first entry
    let mut valid_len = MAGIC.len();
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.iter().all(|&b| b == 0) || rest.len() < ENTRY_HEADER {
            break; // torn: a zero-filled or cut tail
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
        let check = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if check != !len {
            return Err(corrupt(at, format!("length field {len} fails its check")));
        }
        let end = ENTRY_HEADER + len as usize;
        if rest.len() < end {
            break; // torn: cut mid-entry
        }
        let sum = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
        let payload = &rest[ENTRY_HEADER..end];
        if XxHash3_64::oneshot(payload) != sum {
            if rest.len() == end {
                break; // torn: the last entry of the file
            }
            return Err(corrupt(at, "checksum mismatch".into()));
        }
        let decoded = decode_payload(payload).map_err(|reason| corrupt(at, reason))?;
        let is_marker = matches!(decoded.0, Meta::Durable { .. });
        entries.push(Decoded { offset: at as u64, meta: decoded.0, extra: decoded.1 });
        at += end;
        if is_marker {
            group_start = entries.len();
            valid_len = at;
        }
    }
    entries.truncate(group_start);
    Ok(Scan { entries, valid_len: valid_len as u64, torn_bytes: (bytes.len() - valid_len) as u64 })
}

fn decode_payload(payload: &[u8]) -> std::result::Result<(Meta, Vec<u8>), String> {
    if payload.len() < 4 {
        return Err("payload shorter than its meta length".into());
    }
    let meta_len = u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes")) as usize;
    let meta_bytes = payload.get(4..4 + meta_len).ok_or("meta length beyond the entry")?;
    let meta: Meta = serde_json::from_slice(meta_bytes).map_err(|e| format!("invalid entry: {e}"))?;
    Ok((meta, payload[4 + meta_len..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(metas: &[Meta]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for m in metas {
            encode(&mut out, m, if matches!(m, Meta::Commit { .. }) { b"{\"lr\":1}" } else { b"" });
        }
        out
    }

    fn commit(v: u64) -> Meta {
        Meta::Commit { v, parent: v.checked_sub(1), fp: "00".into(), record: true, changed: vec![], removed: vec![] }
    }

    #[test]
    fn round_trip_and_incomplete_group_is_torn() {
        let metas = [commit(0), Meta::Durable { head: 0 }, commit(1), Meta::Tag { name: "a".into(), v: 1 }];
        let bytes = journal(&metas);
        let scan = scan(&bytes, Path::new("j")).unwrap();
        assert_eq!(scan.entries.len(), 2);
        assert_eq!(scan.entries[0].meta, commit(0));
        assert_eq!(scan.entries[0].extra, b"{\"lr\":1}");
        assert!(scan.torn_bytes > 0);
        assert_eq!(scan.valid_len + scan.torn_bytes, bytes.len() as u64);
    }

    #[test]
    fn every_cut_is_torn_never_an_error() {
        let bytes = journal(&[commit(0), Meta::Durable { head: 0 }, commit(1), Meta::Durable { head: 1 }]);
        let first_group = scan(&journal(&[commit(0), Meta::Durable { head: 0 }]), Path::new("j")).unwrap().valid_len;
        for cut in MAGIC.len()..bytes.len() {
            let s = scan(&bytes[..cut], Path::new("j")).unwrap();
            let expected = if (cut as u64) < first_group { MAGIC.len() as u64 } else { first_group };
            assert_eq!(s.valid_len, expected, "cut at {cut}");
        }
    }

    #[test]
    fn damage_before_the_tail_is_an_error_naming_the_offset() {
        let bytes = journal(&[commit(0), Meta::Durable { head: 0 }, commit(1), Meta::Durable { head: 1 }]);
        let second = scan(&bytes, Path::new("j")).unwrap().entries[1].offset as usize;
        for i in MAGIC.len()..second {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            match scan(&bad, Path::new("j")) {
                Err(Error::JournalCorrupt { offset, .. }) => assert_eq!(offset, MAGIC.len() as u64, "byte {i}"),
                other => panic!("byte {i}: {other:?}"),
            }
        }
    }
}
