//! The write-ahead log: what makes a write durable before redb has it.
//!
//! Why: committing redb's copy-on-write B-tree for every group of writes cost
//! the committer a B-tree commit (page copies, checksums, its own fsync) per
//! few writes, three times per replicated write. The log makes a write durable
//! with one sequential append and one `fdatasync`; redb is then committed in
//! large batches behind it (a *checkpoint*), as etcd does with its WAL and
//! bbolt.
//!
//! The log is two files, used in turn: each *generation* of the log is written
//! from offset 0 of file `generation % 2`, over what an older generation left,
//! so an append rewrites blocks the file already has and `fdatasync` flushes no
//! metadata. A checkpoint takes generation `g` into redb while the committer
//! already appends generation `g + 1` to the other file (appends never wait for
//! a checkpoint); its redb transaction records `g + 1` as the oldest generation
//! redb does not have (meta key `wal`), which frees `g`'s file for `g + 2`.
//! Opening the store replays generations `G` and `G + 1` for the stored `G`.
//! Each record carries its generation: records left over from earlier ones, and
//! the zeros or torn bytes past the last whole record, end a generation when it
//! is read back.
//!
//! A record is `len: u32 LE`, `crc: u32 LE` (CRC-32 of the store's salt, the
//! generation and the payload), `generation: u64 LE`, then `len` bytes of
//! payload: one [`Mutation`], tagged. The salt (meta key `wal_salt`, random
//! when the store is created, never written to the log) is there because the
//! bytes past a generation's end are an older generation's, values included:
//! without it, a client could store a value that holds a well-formed record
//! of a future generation, at the offset where it would one day be read.
//!
//! Every mutation is a blind write (put this entry as it is, remove this key,
//! save this identity), so replaying a record that a checkpoint already wrote
//! leaves the same state: a crash between a checkpoint's commit and anything
//! after it loses nothing and doubles nothing.

use super::commit::Mutation;
use super::layout::{decode, encode};
use crate::ring::{Member, Position};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The log's two file names in the store's directory.
pub(super) const FILE_NAMES: [&str; 2] = ["crustyring.wal.0", "crustyring.wal.1"];

/// The largest a generation grows: a batch that does not fit waits for the
/// checkpoint in flight, then goes into redb with the rest.
pub(super) const CAPACITY: u64 = 16 << 20;

/// Bytes before a record's payload: length, checksum, generation.
const RECORD_HEADER: usize = 16;

/// Payload tags.
const PUT: u8 = 1;
const REMOVE: u8 = 2;
const IDENTITY: u8 = 3;

/// The open log, appended to by the committer.
pub(super) struct Wal {
    files: [File; 2],
    /// Where the next record goes.
    at: u64,
    /// The generation records are written with.
    generation: u64,
    /// The store's salt, in every record's checksum.
    salt: u64,
}

impl Wal {
    /// Opens (or creates) the log in `dir` and reads back the records of
    /// generations `generation` and the one after, in order, each up to its
    /// first record that is not whole. Appends then go to
    /// `generation + 2` (see [`Wal::switch`]), once redb has what was read.
    pub fn open(dir: &Path, generation: u64, salt: u64) -> Result<(Self, Vec<Mutation>), String> {
        let open = |name: &str| {
            let path = dir.join(name);
            File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))
        };
        let files = [open(FILE_NAMES[0])?, open(FILE_NAMES[1])?];
        let mut mutations = Vec::new();
        for g in [generation, generation + 1] {
            // After a clean close both files hold older generations: their
            // first header says so, and they are not read further.
            let file = &files[slot(g)];
            let mut first = [0u8; RECORD_HEADER];
            let starts_with_g = file.read_exact_at(&mut first, 0).is_ok()
                && first[8..16] == g.to_le_bytes()
                && first[..4] != [0; 4];
            if !starts_with_g {
                continue;
            }
            let path = dir.join(FILE_NAMES[slot(g)]);
            let bytes =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            mutations.extend(read_records(&bytes, g, salt)?.0);
        }
        // The new files' names must survive a crash, like their records.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
        let wal = Self {
            files,
            at: 0,
            generation: generation + 2,
            salt,
        };
        Ok((wal, mutations))
    }

    /// Whether `bytes` more fit before [`CAPACITY`].
    pub fn fits(&self, bytes: usize) -> bool {
        self.at + bytes as u64 <= CAPACITY
    }

    /// Appends the encoded `records` (from [`Wal::encode`]) and waits until
    /// they are on disk.
    pub fn append(&mut self, records: &[u8]) -> Result<(), String> {
        let file = &self.files[slot(self.generation)];
        file.write_all_at(records, self.at)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("write-ahead log: {e}"))?;
        self.at += records.len() as u64;
        Ok(())
    }

    /// Appends from now on to the next generation, in the other file: call
    /// only once redb holds every generation before the current one, whose
    /// file this overwrites.
    pub fn switch(&mut self) {
        self.generation += 1;
        self.at = 0;
    }

    /// The generation records are written with now.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// `mutations` as records of the current generation, appended to `out`.
    pub fn encode<'a>(&self, mutations: impl IntoIterator<Item = &'a Mutation>, out: &mut Vec<u8>) {
        for m in mutations {
            let start = out.len();
            out.extend_from_slice(&[0; RECORD_HEADER]);
            payload(m, out);
            let len = (out.len() - start - RECORD_HEADER) as u32;
            out[start + 8..start + 16].copy_from_slice(&self.generation.to_le_bytes());
            let crc = checksum(self.salt, &out[start + 8..]);
            out[start..start + 4].copy_from_slice(&len.to_le_bytes());
            out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// A record's checksum: of the salt, then its generation and payload.
fn checksum(salt: u64, body: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&salt.to_le_bytes());
    crc.update(body);
    crc.finalize()
}

/// A new salt for a store: unpredictable from outside the process (the
/// standard library's randomly keyed SipHash, over the time).
pub(super) fn new_salt() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Which of the two files holds `generation`.
fn slot(generation: u64) -> usize {
    (generation % 2) as usize
}

/// A mutation's payload: a tag, then for a put or a removal the position
/// (8 bytes), the key's length (4) and the key, then a put's encoded entry;
/// for an identity its ID (8 bytes) and address.
fn payload(m: &Mutation, out: &mut Vec<u8>) {
    let keyed = |out: &mut Vec<u8>, tag: u8, position: u64, key: &[u8]| {
        out.push(tag);
        out.extend_from_slice(&position.to_le_bytes());
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
    };
    match m {
        Mutation::Put(e) => {
            keyed(out, PUT, e.position.0, &e.key);
            out.extend_from_slice(&encode(e));
        }
        Mutation::Remove(position, key) => keyed(out, REMOVE, *position, key),
        Mutation::Identity(member) => {
            out.push(IDENTITY);
            out.extend_from_slice(&member.id.0.to_le_bytes());
            out.extend_from_slice(member.addr.as_bytes());
        }
    }
}

/// The whole records of `generation` at the start of `bytes`, and where they
/// end. A record whose checksum holds but whose payload does not parse is an
/// error: the log was written by something else.
fn read_records(
    bytes: &[u8],
    generation: u64,
    salt: u64,
) -> Result<(Vec<Mutation>, usize), String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + RECORD_HEADER) {
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let (len, crc) = (word(0) as usize, word(4));
        let of = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let Some(body) = bytes.get(at + 8..at + RECORD_HEADER + len) else {
            break;
        };
        if len == 0 || of != generation || checksum(salt, body) != crc {
            break;
        }
        let m = parse(&body[8..]).ok_or_else(|| {
            format!("write-ahead log: record at byte {at} has a valid checksum but cannot be read")
        })?;
        out.push(m);
        at += RECORD_HEADER + len;
    }
    Ok((out, at))
}

/// The mutation a payload holds, if it is one.
fn parse(payload: &[u8]) -> Option<Mutation> {
    let (&tag, rest) = payload.split_first()?;
    let position = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    if tag == IDENTITY {
        let addr = String::from_utf8(rest[8..].to_vec()).ok()?;
        return Some(Mutation::Identity(Member::new(Position(position), addr)));
    }
    let len = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
    let key = rest.get(12..12 + len)?;
    let tail = &rest[12 + len..];
    match tag {
        PUT => decode(position, key, tail).ok().map(Mutation::Put),
        REMOVE if tail.is_empty() => Some(Mutation::Remove(position, key.to_vec())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Entry, Version};

    fn put(position: u64, key: &str, value: &str) -> Mutation {
        Mutation::Put(Entry {
            position: Position(position),
            key: key.as_bytes().to_vec(),
            value: Some(value.as_bytes().to_vec()),
            version: Version { micros: 7, node: 9 },
            expires: Some(1 << 50),
        })
    }

    const SALT: u64 = 0x5A17;

    fn wal(generation: u64) -> Wal {
        Wal {
            files: [temp_file(0), temp_file(1)],
            at: 0,
            generation,
            salt: SALT,
        }
    }

    /// A file deleted as soon as it is open.
    fn temp_file(n: u8) -> File {
        let path = std::env::temp_dir().join(format!(
            "crustyring-wal-{}-{:?}-{n}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        file
    }

    fn ids(ms: &[Mutation]) -> Vec<String> {
        ms.iter()
            .map(|m| match m {
                Mutation::Put(e) => format!("put {} {:?}", e.position.0, e.value),
                Mutation::Remove(p, k) => format!("remove {p} {k:?}"),
                Mutation::Identity(m) => format!("identity {} {}", m.id.0, m.addr),
            })
            .collect()
    }

    #[test]
    fn records_read_back_as_written_up_to_the_first_torn_one() {
        let log = wal(3);
        let written = vec![
            put(5, "a", "1"),
            Mutation::Remove(6, b"b".to_vec()),
            Mutation::Identity(Member::new(Position(42), "http://x:1")),
            put(u64::MAX, "", ""),
        ];
        let mut bytes = Vec::new();
        log.encode(&written, &mut bytes);
        let (read, end) = read_records(&bytes, 3, SALT).unwrap();
        assert_eq!(ids(&read), ids(&written));
        assert_eq!(end, bytes.len());

        // Cut anywhere inside the last record: the ones before it stay.
        let mut last = Vec::new();
        log.encode(&written[3..], &mut last);
        let whole = bytes.len() - last.len();
        for cut in whole..bytes.len() {
            let (read, end) = read_records(&bytes[..cut], 3, SALT).unwrap();
            assert_eq!(read.len(), 3, "cut at {cut}");
            assert_eq!(end, whole);
        }
        // A flipped bit in the last record ends the log before it.
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(read_records(&flipped, 3, SALT).unwrap().0.len(), 3);
    }

    #[test]
    fn records_of_other_generations_or_salts_and_zeros_end_the_log() {
        let (old, new) = (wal(1), wal(2));
        let mut bytes = Vec::new();
        new.encode(&[put(1, "a", "new")], &mut bytes);
        let end = bytes.len();
        old.encode(&[put(2, "b", "old")], &mut bytes);
        let (read, at) = read_records(&bytes, 2, SALT).unwrap();
        assert_eq!(ids(&read), vec!["put 1 Some([110, 101, 119])"]);
        assert_eq!(at, end);
        assert!(read_records(&bytes, 3, SALT).unwrap().0.is_empty());
        assert!(read_records(&[0; 64], 0, SALT).unwrap().0.is_empty());
        // Nor is a record forged without the store's salt.
        assert!(
            read_records(&bytes[..end], 2, SALT + 1)
                .unwrap()
                .0
                .is_empty()
        );
        assert!(read_records(&[], 2, SALT).unwrap().0.is_empty());
    }

    #[test]
    fn a_checksummed_record_that_does_not_parse_is_an_error() {
        let log = wal(1);
        let mut bytes = Vec::new();
        log.encode(&[Mutation::Remove(6, b"b".to_vec())], &mut bytes);
        // Claim a longer key than the record holds, and fix the checksum.
        bytes[RECORD_HEADER + 9] = 200;
        let crc = checksum(SALT, &bytes[8..]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        let e = read_records(&bytes, 1, SALT).err().unwrap();
        assert!(e.contains("byte 0"), "{e}");
    }

    #[test]
    fn generations_alternate_between_the_files() {
        let mut log = wal(1);
        let mut bytes = Vec::new();
        log.encode(&[put(1, "a", "1")], &mut bytes);
        log.append(&bytes).unwrap();
        let first = bytes.len() as u64;
        assert_eq!(log.at, first);
        assert!(log.fits((CAPACITY - first) as usize));
        assert!(!log.fits((CAPACITY - first) as usize + 1));
        let on_disk = |log: &Wal, file: usize, generation: u64| {
            let mut bytes = vec![0; first as usize];
            log.files[file].read_exact_at(&mut bytes, 0).unwrap();
            ids(&read_records(&bytes, generation, SALT).unwrap().0)
        };
        log.switch();
        assert_eq!((log.at, log.generation()), (0, 2));
        let mut again = Vec::new();
        log.encode(&[put(2, "b", "2")], &mut again);
        log.append(&again).unwrap();
        // Generation 1 is still whole beside it, for a checkpoint in flight.
        assert_eq!(on_disk(&log, 1, 1), vec!["put 1 Some([49])"]);
        assert_eq!(on_disk(&log, 0, 2), vec!["put 2 Some([50])"]);
        log.switch();
        let mut third = Vec::new();
        log.encode(&[put(3, "c", "3")], &mut third);
        log.append(&third).unwrap();
        assert_eq!(on_disk(&log, 1, 3), vec!["put 3 Some([51])"]);
        assert!(
            on_disk(&log, 1, 1).is_empty(),
            "generation 1 was overwritten"
        );
    }
}
