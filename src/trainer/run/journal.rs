//! The journal: an append-only file of length-prefixed, checksummed entries, one per event (commit, tag,
//! rollback, state stored, prune), written in groups that each end with a `durable` marker.
//!
//! ```text
//! file    = MAGIC entry*                       MAGIC = "PSJRNL2\n" (format 1, "PSJRNL1\n", is read only)
//! entry   = len: u32 | !len: u32 | xxh3-64(payload): u64 | payload (len bytes)
//! payload = 0x01 commit | 0x02 meta (JSON, `Meta`: tag, rollback, stored, prune, durable)
//! commit  = v: u64 | parent: u64 (u64::MAX: none) | fingerprint: u128 | flags: u8 (1: a record follows)
//!           | n: u32 | (len: u32 | path, UTF-8)*   the paths new to the journal: they take the next ids
//!           | n: u32 | (path id: u32 | digest: u128)*   the variables whose digest differs from the parent's
//!           | n: u32 | path id: u32*                the variables the parent has and this version has not
//!           | record (JSON, the rest of the payload)
//! ```
//!
//! Integers are little-endian. A path's id is its index in the journal's path table: the paths in the order
//! commits first declare them, so each path is written once per journal, and a commit costs 20 bytes per
//! changed variable. Format 1 (payload = meta_len: u32 | meta JSON | record JSON, commits' digests as hex
//! strings) is read into the same entries.
//!
//! Reading stops at the end of the last complete group. What follows it is the torn tail of a process that
//! died mid-append: a cut entry, a zero-filled tail, a bad checksum on the file's last entry, or complete
//! entries of a group whose `durable` marker never made it. Anything else that does not check out, with more
//! entries after it, is damage: [`Error::JournalCorrupt`] with the entry's offset, and nothing is truncated.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use twox_hash::XxHash3_64;

use crate::checkpoint::metadata::VariableRecord;
use crate::error::{Error, Result};
use crate::store::Fingerprint;

/// The journal format this code writes (the newest it reads).
pub(crate) const FORMAT: u32 = super::layout::FORMAT_VERSION;
/// The journal's first bytes.
pub(crate) const MAGIC: &[u8; 8] = b"PSJRNL2\n";
/// The first bytes of a format-1 journal (read only).
pub(crate) const MAGIC_V1: &[u8; 8] = b"PSJRNL1\n";
/// Bytes before an entry's payload.
const ENTRY_HEADER: usize = 16;
/// A payload's first byte: a binary commit.
const KIND_COMMIT: u8 = 1;
/// A payload's first byte: a JSON meta.
const KIND_META: u8 = 2;
/// `parent` of a commit without one (version 0).
const NO_PARENT: u64 = u64::MAX;

/// One event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Meta {
    /// A committed version (binary in the file, never JSON).
    #[serde(skip)]
    Commit(Commit),
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

/// A commit as format 1 wrote it (JSON, digests in hex), converted to a [`Commit`] when read.
#[derive(Deserialize)]
struct CommitV1 {
    v: u64,
    parent: Option<u64>,
    fp: String,
    record: bool,
    changed: Vec<(String, String)>,
    removed: Vec<String>,
}

/// A committed version: its parent, fingerprint, whether a record follows, and the digests of the variables
/// whose value differs from the parent's (`changed`) or that the parent has and it has not (`removed`), by
/// path id. Version 0 lists every variable.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Commit {
    pub(crate) v: u64,
    pub(crate) parent: Option<u64>,
    pub(crate) fp: Fingerprint,
    pub(crate) record: bool,
    /// Paths new to the journal, in order: they take the ids after the table's last.
    pub(crate) new_paths: Vec<String>,
    pub(crate) changed: Vec<(u32, u128)>,
    pub(crate) removed: Vec<u32>,
}

impl Default for Commit {
    fn default() -> Self {
        Commit {
            v: 0,
            parent: None,
            fp: Fingerprint(0),
            record: false,
            new_paths: Vec::new(),
            changed: Vec::new(),
            removed: Vec::new(),
        }
    }
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

/// One decoded entry: its offset in the file, meta, and extra bytes (a commit's record).
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) offset: u64,
    pub(crate) meta: Meta,
    pub(crate) extra: Vec<u8>,
}

/// Reserves an entry's header in `out`; returns where the entry starts.
fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; ENTRY_HEADER]);
    start
}

/// Fills in the header of the entry that starts at `start` and runs to the end of `out`.
fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start - ENTRY_HEADER) as u32;
    let sum = XxHash3_64::oneshot(&out[start + ENTRY_HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&(!len).to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&sum.to_le_bytes());
}

/// Appends the entry of `meta` to `out`; `extra` is a commit's record (JSON), empty for other entries.
pub(crate) fn encode(out: &mut Vec<u8>, meta: &Meta, extra: &[u8]) {
    match meta {
        Meta::Commit(c) => encode_commit(out, c, extra),
        _ => {
            let start = begin(out);
            out.push(KIND_META);
            serde_json::to_writer(&mut *out, meta).expect("a meta of strings and numbers always serializes");
            finish(out, start);
        }
    }
}

/// Appends the binary entry of commit `c` with its record `extra` (JSON; empty when `c.record` is false).
pub(crate) fn encode_commit(out: &mut Vec<u8>, c: &Commit, extra: &[u8]) {
    let start = begin(out);
    out.reserve(
        1 + 8
            + 8
            + 16
            + 1
            + 12
            + c.new_paths.iter().map(|p| 4 + p.len()).sum::<usize>()
            + c.changed.len() * 20
            + c.removed.len() * 4
            + extra.len(),
    );
    out.push(KIND_COMMIT);
    out.extend_from_slice(&c.v.to_le_bytes());
    out.extend_from_slice(&c.parent.unwrap_or(NO_PARENT).to_le_bytes());
    out.extend_from_slice(&c.fp.0.to_le_bytes());
    out.push(u8::from(c.record));
    out.extend_from_slice(&(c.new_paths.len() as u32).to_le_bytes());
    for p in &c.new_paths {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(&(c.changed.len() as u32).to_le_bytes());
    for (id, digest) in &c.changed {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&digest.to_le_bytes());
    }
    out.extend_from_slice(&(c.removed.len() as u32).to_le_bytes());
    for id in &c.removed {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out.extend_from_slice(extra);
    finish(out, start);
}

/// What [`scan`] found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// The entries of every complete group, in order.
    pub(crate) entries: Vec<Decoded>,
    /// The path table as of the last complete group: paths by id.
    pub(crate) paths: Vec<String>,
    /// The journal's format: 1 or 2.
    pub(crate) format: u32,
    /// The length of the file up to the end of the last complete group.
    pub(crate) valid_len: u64,
    /// The bytes after it (a torn tail): 0 when the file ended cleanly.
    pub(crate) torn_bytes: u64,
}

/// The path table as a scan builds it.
#[derive(Default)]
struct Table {
    paths: Vec<String>,
    /// Path to id, for format 1 (whose commits name paths).
    ids: HashMap<String, u32>,
}

impl Table {
    fn declare(&mut self, path: &str) -> u32 {
        let id = self.paths.len() as u32;
        self.paths.push(path.to_string());
        self.ids.insert(path.to_string(), id);
        id
    }
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
    let format = match bytes.get(..MAGIC.len()) {
        Some(m) if m == MAGIC => 2,
        Some(m) if m == MAGIC_V1 => 1,
        _ => return Err(corrupt(0, "the file does not start with the journal's magic bytes".into())),
    };
    let mut entries = Vec::new();
    let mut table = Table::default();
    let mut group_start = 0; // index in `entries` of the current group's first entry
    let mut group_paths = 0; // the table's length at the end of the last complete group
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
        let decoded = match format {
            1 => decode_v1(payload, &mut table),
            _ => decode(payload, &mut table),
        }
        .map_err(|reason| corrupt(at, reason))?;
        let is_marker = matches!(decoded.0, Meta::Durable { .. });
        entries.push(Decoded { offset: at as u64, meta: decoded.0, extra: decoded.1 });
        at += end;
        if is_marker {
            group_start = entries.len();
            group_paths = table.paths.len();
            valid_len = at;
        }
    }
    entries.truncate(group_start);
    table.paths.truncate(group_paths);
    Ok(Scan {
        entries,
        paths: table.paths,
        format,
        valid_len: valid_len as u64,
        torn_bytes: (bytes.len() - valid_len) as u64,
    })
}

/// A bounds-checked reader of a binary payload.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("commit entry cut at byte {} of its payload", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn u128(&mut self) -> std::result::Result<u128, String> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().expect("16 bytes")))
    }

    /// A count of items of at least `item` bytes each, checked against the bytes left.
    fn count(&mut self, item: usize) -> std::result::Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item) > self.bytes.len() - self.at {
            return Err(format!("a count of {n} beyond the entry"));
        }
        Ok(n)
    }
}

/// Decodes a format-2 payload; a commit declares its new paths in `table`.
fn decode(payload: &[u8], table: &mut Table) -> std::result::Result<(Meta, Vec<u8>), String> {
    match payload.first() {
        Some(&KIND_META) => {
            let meta: Meta = serde_json::from_slice(&payload[1..]).map_err(|e| format!("invalid entry: {e}"))?;
            Ok((meta, Vec::new()))
        }
        Some(&KIND_COMMIT) => {
            let mut r = Reader { bytes: payload, at: 1 };
            let v = r.u64()?;
            let parent = Some(r.u64()?).filter(|&p| p != NO_PARENT);
            let fp = Fingerprint(r.u128()?);
            let record = match r.u8()? {
                0 => false,
                1 => true,
                f => return Err(format!("commit flags {f:#x}")),
            };
            let n = r.count(4)?;
            let mut new_paths = Vec::with_capacity(n);
            for _ in 0..n {
                let len = r.u32()? as usize;
                let path = std::str::from_utf8(r.take(len)?).map_err(|_| "a path that is not UTF-8".to_string())?;
                table.declare(path);
                new_paths.push(path.to_string());
            }
            let known = table.paths.len();
            let id = |r: &mut Reader<'_>| {
                let id = r.u32()?;
                if (id as usize) < known {
                    Ok(id)
                } else {
                    Err(format!("path id {id}, the table has {known}"))
                }
            };
            let n = r.count(20)?;
            let mut changed = Vec::with_capacity(n);
            for _ in 0..n {
                changed.push((id(&mut r)?, r.u128()?));
            }
            let n = r.count(4)?;
            let mut removed = Vec::with_capacity(n);
            for _ in 0..n {
                removed.push(id(&mut r)?);
            }
            let extra = payload[r.at..].to_vec();
            Ok((Meta::Commit(Commit { v, parent, fp, record, new_paths, changed, removed }), extra))
        }
        Some(k) => Err(format!("unknown entry kind {k:#x}")),
        None => Err("an empty entry".into()),
    }
}

/// Decodes a format-1 payload (meta_len: u32 | meta JSON | extra), converting a commit's paths to ids.
fn decode_v1(payload: &[u8], table: &mut Table) -> std::result::Result<(Meta, Vec<u8>), String> {
    if payload.len() < 4 {
        return Err("payload shorter than its meta length".into());
    }
    let meta_len = u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes")) as usize;
    let meta_bytes = payload.get(4..4 + meta_len).ok_or("meta length beyond the entry")?;
    let invalid = |e: serde_json::Error| format!("invalid entry: {e}");
    let value: serde_json::Value = serde_json::from_slice(meta_bytes).map_err(invalid)?;
    let extra = payload[4 + meta_len..].to_vec();
    if value.get("kind").and_then(|k| k.as_str()) != Some("commit") {
        return Ok((serde_json::from_value(value).map_err(invalid)?, extra));
    }
    let CommitV1 { v, parent, fp, record, changed, removed } = serde_json::from_value(value).map_err(invalid)?;
    let fp = fp.parse().map_err(|_| format!("fingerprint `{fp}`"))?;
    let mut c = Commit { v, parent, fp, record, new_paths: Vec::new(), changed: Vec::new(), removed: Vec::new() };
    for (path, hex) in changed {
        let digest = u128::from_str_radix(&hex, 16).map_err(|_| format!("digest `{hex}` of `{path}`"))?;
        let id = match table.ids.get(&path) {
            Some(&id) => id,
            None => {
                c.new_paths.push(path.clone());
                table.declare(&path)
            }
        };
        c.changed.push((id, digest));
    }
    for path in removed {
        let id = table.ids.get(&path).copied().ok_or_else(|| format!("removes `{path}`, never committed"))?;
        c.removed.push(id);
    }
    Ok((Meta::Commit(c), extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(metas: &[Meta]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for m in metas {
            encode(&mut out, m, if matches!(m, Meta::Commit(_)) { b"{\"lr\":1}" } else { b"" });
        }
        out
    }

    fn commit(v: u64) -> Meta {
        let new_paths = if v == 0 { vec!["a".to_string(), "b/c".to_string()] } else { vec![format!("n{v}")] };
        let first = if v == 0 { 0 } else { v as u32 + 1 };
        Meta::Commit(Commit {
            v,
            parent: v.checked_sub(1),
            fp: Fingerprint(u128::MAX - u128::from(v)),
            record: true,
            new_paths,
            changed: vec![(first, 7 << 100), (0, u128::from(v))],
            removed: if v > 1 { vec![1] } else { vec![] },
        })
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
        // The torn group's path is not in the table.
        assert_eq!(scan.paths, ["a", "b/c"]);
        assert_eq!(scan.format, 2);
    }

    #[test]
    fn paths_are_declared_once_and_ids_are_checked() {
        let metas = [commit(0), commit(1), commit(2), Meta::Durable { head: 2 }];
        let read = scan(&journal(&metas), Path::new("j")).unwrap();
        assert_eq!(read.paths, ["a", "b/c", "n1", "n2"]);
        for (e, m) in read.entries.iter().zip(&metas) {
            assert_eq!(&e.meta, m);
        }
        // An id beyond the table is damage, named by its offset.
        let Meta::Commit(mut bad) = commit(0) else { unreachable!() };
        bad.changed.push((5, 1));
        let bad = Meta::Commit(bad);
        let bytes = journal(&[bad, Meta::Durable { head: 0 }]);
        match scan(&bytes, Path::new("j")) {
            Err(Error::JournalCorrupt { offset: 8, reason, .. }) => assert!(reason.contains("path id 5"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn format_1_journals_are_read() {
        let mut out = MAGIC_V1.to_vec();
        let mut entry = |meta: &str, extra: &[u8]| {
            let mut payload = (meta.len() as u32).to_le_bytes().to_vec();
            payload.extend_from_slice(meta.as_bytes());
            payload.extend_from_slice(extra);
            let len = payload.len() as u32;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(&XxHash3_64::oneshot(&payload).to_le_bytes());
            out.extend_from_slice(&payload);
        };
        let d = format!("{:032x}", 7u128 << 100);
        entry(
            &format!(
                r#"{{"kind":"commit","v":0,"parent":null,"fp":"ff","record":false,"changed":[["a","{d}"],["b","01"]],"removed":[]}}"#
            ),
            b"",
        );
        entry(r#"{"kind":"durable","head":0}"#, b"");
        entry(
            r#"{"kind":"commit","v":1,"parent":0,"fp":"0e","record":true,"changed":[["a","02"]],"removed":["b"]}"#,
            b"3",
        );
        entry(r#"{"kind":"durable","head":1}"#, b"");
        let scan = scan(&out, Path::new("j")).unwrap();
        assert_eq!(scan.format, 1);
        assert_eq!(scan.paths, ["a", "b"]);
        let v0 = Commit {
            v: 0,
            parent: None,
            fp: Fingerprint(0xff),
            record: false,
            new_paths: vec!["a".into(), "b".into()],
            changed: vec![(0, 7 << 100), (1, 1)],
            removed: vec![],
        };
        assert_eq!(scan.entries[0].meta, Meta::Commit(v0));
        let v1 = Commit {
            v: 1,
            parent: Some(0),
            fp: Fingerprint(0xe),
            record: true,
            new_paths: vec![],
            changed: vec![(0, 2)],
            removed: vec![1],
        };
        assert_eq!(scan.entries[2].meta, Meta::Commit(v1));
        assert_eq!(scan.entries[2].extra, b"3");
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
