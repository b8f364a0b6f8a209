//! Power-loss checking of the pool, the way PMDK's pmreorder does it.
//!
//! The pool runs on a [`Recording`] region that logs every store, flush and fence of
//! `create`, `import`, `rm` and their commits. The log is then replayed against a model of
//! persistent memory: a store makes its cache lines pending; a flush marks pending lines
//! for write-back; a fence makes the flushed lines durable. Before every fence (and at the
//! end of each operation) a power failure may have kept any subset of the pending lines:
//! every subset when there are at most [`EXHAUSTIVE`] of them, otherwise none, all, each
//! single line, all but each single line, and [`RANDOM_SUBSETS`] seeded random subsets.
//! Each such crash image is opened as a pool and must be clean (`fsck`), hold exactly the
//! snapshot table before or after the operation, and every snapshot in its table must still
//! hash to its recorded digest.
//!
//! Simplifications, stated: a line stored twice before a fence is either old or newest
//! (never the intermediate value), and the unit of loss is a 64-byte line (x86 writes
//! lines back whole; only the commit record relies on a smaller unit, an aligned 8-byte
//! store). A deep digest check is reused for an image whose lost or kept lines lie
//! outside the snapshot's extents: its bytes are then those of an image already checked.

use super::format::{SnapshotEntry, EXTENT};
use super::region::{MappedRegion, Region};
use super::Pool;
use crate::snapshot::{SnapshotInput, VmState};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Pending lines up to which every subset is tried.
const EXHAUSTIVE: usize = 12;
/// Seeded random subsets tried beyond that.
const RANDOM_SUBSETS: usize = 64;
const LINE: u64 = 64;
/// Bytes of the test pool: the metadata extent and nine for snapshots.
const POOL: u64 = 10 * EXTENT;

/// What the pool did to its region.
#[derive(Clone, Debug)]
enum Event {
    Store { offset: u64, bytes: Vec<u8> },
    Flush { offset: u64, len: u64 },
    Fence,
}

type Log = Arc<Mutex<Vec<Event>>>;

/// A volatile region that logs every store, flush and fence.
struct Recording {
    memory: MappedRegion,
    log: Log,
}

impl Recording {
    fn push(&self, event: Event) {
        self.log.lock().unwrap().push(event);
    }
}

impl Region for Recording {
    fn len(&self) -> u64 {
        self.memory.len()
    }
    fn bytes(&self, offset: u64, len: u64) -> &[u8] {
        self.memory.bytes(offset, len)
    }
    fn store(&self, offset: u64, bytes: &[u8]) {
        self.memory.store(offset, bytes);
        self.push(Event::Store { offset, bytes: bytes.to_vec() });
    }
    fn store_with(&self, offset: u64, len: u64, fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>) -> io::Result<()> {
        self.memory.store_with(offset, len, fill)?;
        self.push(Event::Store { offset, bytes: self.memory.bytes(offset, len).to_vec() });
        Ok(())
    }
    fn load_u64(&self, offset: u64) -> u64 {
        self.memory.load_u64(offset)
    }
    fn store_u64(&self, offset: u64, value: u64) {
        self.memory.store_u64(offset, value);
        self.push(Event::Store { offset, bytes: value.to_le_bytes().to_vec() });
    }
    fn flush(&self, offset: u64, len: u64) -> io::Result<()> {
        self.push(Event::Flush { offset, len });
        Ok(())
    }
    fn fence(&self) -> io::Result<()> {
        self.push(Event::Fence);
        Ok(())
    }
}

/// A crash image the checker edits and the pool reads.
struct Image(Arc<MappedRegion>);

impl Region for Image {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn bytes(&self, offset: u64, len: u64) -> &[u8] {
        self.0.bytes(offset, len)
    }
    fn store(&self, offset: u64, bytes: &[u8]) {
        self.0.store(offset, bytes)
    }
    fn store_with(&self, offset: u64, len: u64, fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>) -> io::Result<()> {
        self.0.store_with(offset, len, fill)
    }
    fn load_u64(&self, offset: u64) -> u64 {
        self.0.load_u64(offset)
    }
    fn store_u64(&self, offset: u64, value: u64) {
        self.0.store_u64(offset, value)
    }
    fn flush(&self, _: u64, _: u64) -> io::Result<()> {
        Ok(())
    }
    fn fence(&self) -> io::Result<()> {
        Ok(())
    }
}

/// The snapshot table a state holds (`None`: no pool yet).
type State = Option<Vec<SnapshotEntry>>;

/// One operation: its events are `log[start..end]`, and it takes the pool from `old` to `new`.
struct Op {
    name: &'static str,
    start: usize,
    end: usize,
    old: State,
    new: State,
}

/// The model of persistent memory the log is replayed against.
struct Model {
    persisted: Vec<u8>,
    latest: Vec<u8>,
    /// Pending lines: `true` once flushed (durable at the next fence).
    pending: BTreeMap<u64, bool>,
}

impl Model {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::Store { offset, bytes } => {
                self.latest[*offset as usize..*offset as usize + bytes.len()].copy_from_slice(bytes);
                for line in offset / LINE..(offset + bytes.len() as u64).div_ceil(LINE) {
                    self.pending.insert(line, false);
                }
            }
            Event::Flush { offset, len } => {
                for line in offset / LINE..(offset + len).div_ceil(LINE) {
                    if let Some(flushed) = self.pending.get_mut(&line) {
                        *flushed = true;
                    }
                }
            }
            Event::Fence => {
                let durable: Vec<u64> = self.pending.iter().filter(|(_, &f)| f).map(|(&l, _)| l).collect();
                for line in durable {
                    let r = (line * LINE) as usize..((line + 1) * LINE) as usize;
                    self.persisted[r.clone()].copy_from_slice(&self.latest[r]);
                    self.pending.remove(&line);
                }
            }
        }
    }
}

/// Checks crash images against the states an operation goes between.
struct Checker<'a> {
    op: &'a Op,
    image: Arc<MappedRegion>,
    /// Deep-check results of snapshots untouched by the lines of the current image.
    digests: HashMap<String, bool>,
    images: u64,
}

impl Checker<'_> {
    /// Sets line `line` of the image to `from`'s bytes.
    fn set(&self, line: u64, from: &[u8]) {
        let r = (line * LINE) as usize..((line + 1) * LINE) as usize;
        self.image.store(line * LINE, &from[r]);
    }

    /// Checks the current image; `kept` are the pending lines it took from the latest bytes.
    fn check(&mut self, kept: &[u64], lost: &[u64]) -> Result<(), String> {
        self.images += 1;
        let describe = |what: String| format!("{}: crash image (kept {kept:?}, lost {lost:?}): {what}", self.op.name);
        let pool = match Pool::open_in_memory(Box::new(Image(self.image.clone()))) {
            Ok(pool) => pool,
            // Before `create` finished, "no pool" is the old state: a superblock that is not valid.
            Err(super::PoolError::Superblock { .. }) if self.op.old.is_none() => return Ok(()),
            Err(e) => return Err(describe(crate::error_chain(&e))),
        };
        let report = pool.fsck(false);
        if !report.is_clean() {
            return Err(describe(format!("fsck: {:?}", report.problems)));
        }
        let table = pool.info().map_err(|e| describe(e.to_string()))?.snapshots;
        if Some(&table) != self.op.old.as_ref() && Some(&table) != self.op.new.as_ref() {
            let ids: Vec<&str> = table.iter().map(|e| e.id.as_str()).collect();
            return Err(describe(format!("holds neither the old nor the new table: {ids:?}")));
        }
        for entry in &table {
            let touched = kept.iter().chain(lost).any(|l| entry.extents.binary_search(&(l * LINE / EXTENT)).is_ok());
            let ok = match self.digests.get(&entry.id) {
                Some(&ok) if !touched => ok,
                _ => {
                    let ok = pool.load_entry(entry).and_then(|(index, _)| pool.check_digest(entry, &index)).is_ok();
                    if !touched {
                        self.digests.insert(entry.id.clone(), ok);
                    }
                    ok
                }
            };
            if !ok {
                return Err(describe(format!("snapshot `{}` lost its memory", entry.id)));
            }
        }
        Ok(())
    }

    /// Every crash image a power failure at this point can leave.
    fn crash_images(&mut self, model: &Model) -> Result<(), String> {
        self.image.store(0, &model.persisted);
        self.digests.clear();
        let lines: Vec<u64> = model.pending.keys().copied().collect();
        let subset = |this: &mut Self, bits: &dyn Fn(usize) -> bool| {
            let (kept, lost): (Vec<u64>, Vec<u64>) = lines.iter().enumerate().partition_map(bits);
            kept.iter().for_each(|&l| this.set(l, &model.latest));
            let result = this.check(&kept, &lost);
            kept.iter().for_each(|&l| this.set(l, &model.persisted));
            result
        };
        if lines.len() <= EXHAUSTIVE {
            for mask in 0..1u64 << lines.len() {
                subset(self, &|i| mask & (1 << i) != 0)?;
            }
            return Ok(());
        }
        subset(self, &|_| false)?;
        subset(self, &|_| true)?;
        // Each single line kept, then all but each single line (edited in place: one line per image).
        for &line in &lines {
            self.set(line, &model.latest);
            let result = self.check(&[line], &[]);
            self.set(line, &model.persisted);
            result?;
        }
        lines.iter().for_each(|&l| self.set(l, &model.latest));
        for &line in &lines {
            self.set(line, &model.persisted);
            let result = self.check(&[], &[line]);
            self.set(line, &model.latest);
            result?;
        }
        lines.iter().for_each(|&l| self.set(l, &model.persisted));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ self.op.start as u64;
        for _ in 0..RANDOM_SUBSETS {
            let bits: Vec<bool> = lines.iter().map(|_| xorshift(&mut seed) & 1 == 1).collect();
            subset(self, &|i| bits[i])?;
        }
        Ok(())
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Splits enumerated lines into (kept, lost) by `bits`.
trait PartitionMap {
    fn partition_map(self, bits: &dyn Fn(usize) -> bool) -> (Vec<u64>, Vec<u64>);
}

impl<'a, I: Iterator<Item = (usize, &'a u64)>> PartitionMap for I {
    fn partition_map(self, bits: &dyn Fn(usize) -> bool) -> (Vec<u64>, Vec<u64>) {
        let (kept, lost): (Vec<_>, Vec<_>) = self.partition(|(i, _)| bits(*i));
        (kept.into_iter().map(|(_, &l)| l).collect(), lost.into_iter().map(|(_, &l)| l).collect())
    }
}

/// Replays `log` and checks the crash images of every fence inside each of `ops`, and at
/// each one's end. Returns the number of images checked.
fn check_log(log: &[Event], ops: &[Op]) -> Result<u64, String> {
    let mut model =
        Model { persisted: vec![0; POOL as usize], latest: vec![0; POOL as usize], pending: BTreeMap::new() };
    let image = Arc::new(MappedRegion::anonymous(POOL as usize).map_err(|e| e.to_string())?);
    let mut images = 0;
    for op in ops {
        for event in &log[model_position(op, ops)..op.start] {
            model.apply(event);
        }
        let mut checker = Checker { op, image: image.clone(), digests: HashMap::new(), images: 0 };
        for event in &log[op.start..op.end] {
            if matches!(event, Event::Fence) {
                checker.crash_images(&model)?;
            }
            model.apply(event);
        }
        checker.crash_images(&model)?;
        images += checker.images;
    }
    Ok(images)
}

/// Where the model stands when `op` starts: the end of the operation before it.
fn model_position(op: &Op, ops: &[Op]) -> usize {
    ops.iter().take_while(|o| o.start < op.start).last().map_or(0, |o| o.end)
}

/// Writes a 16 MiB snapshot with a pattern in the 2 MiB chunks `chunks` (no KVM needed:
/// the vCPU state is a default one, never restored).
fn synthetic_snapshot(dir: &Path, chunks: &[u64], seed: u8) {
    let mapping = crate::vstate::memory::Mapping::anonymous(snapvisor_abi::layout::MIN_MEM_SIZE as usize).unwrap();
    let memory = crate::vstate::memory::GuestMemory::new(mapping).unwrap();
    for &c in chunks {
        let bytes: Vec<u8> = (0..EXTENT).map(|i| (i % 251) as u8 ^ seed | 1).collect();
        memory.write(c * EXTENT, &bytes).unwrap();
    }
    let state = VmState::synthetic(snapvisor_abi::ABI_VERSION, vec![(0x10, 1)]);
    let input = SnapshotInput { function: "synthetic", image: b"image", state, memory: &memory };
    crate::snapshot::write(dir, input, false).unwrap();
}

/// Runs create, import a, import b, rm a, import c (into a's freed extents) on a recording
/// pool; returns the log and the operations.
fn record_history(dir: &Path) -> (Vec<Event>, Vec<Op>) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    synthetic_snapshot(&dir.join("a"), &[1], 1);
    synthetic_snapshot(&dir.join("b"), &[0, 5], 2);
    let log: Log = Arc::default();
    let region = Recording { memory: MappedRegion::anonymous(POOL as usize).unwrap(), log: log.clone() };
    let mut ops = Vec::new();
    let len = || log.lock().unwrap().len();
    let pool = Pool::create_in_memory(Box::new(region), POOL).unwrap();
    let table = |pool: &Pool| Some(pool.info().unwrap().snapshots);
    ops.push(Op { name: "create", start: 0, end: len(), old: None, new: table(&pool) });
    type Step<'a> = (&'static str, &'a dyn Fn(&Pool));
    let steps: [Step; 4] = [
        ("import a", &|p| drop(p.import(&dir.join("a"), "a", &mut |_, _| {}).unwrap())),
        ("import b", &|p| drop(p.import(&dir.join("b"), "b", &mut |_, _| {}).unwrap())),
        ("rm a", &|p| drop(p.remove("a").unwrap())),
        ("import c", &|p| drop(p.import(&dir.join("a"), "c", &mut |_, _| {}).unwrap())),
    ];
    for (name, step) in steps {
        let (start, old) = (len(), table(&pool));
        step(&pool);
        ops.push(Op { name, start, end: len(), old, new: table(&pool) });
    }
    let events = log.lock().unwrap().clone();
    (events, ops)
}

fn temp(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("snapvisor-crash-{tag}-{}", std::process::id()))
}

#[test]
fn every_crash_image_holds_the_old_or_the_new_state() {
    let dir = temp("images");
    let (log, ops) = record_history(&dir);
    let fences = log.iter().filter(|e| matches!(e, Event::Fence)).count();
    let images = check_log(&log, &ops).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{fences} fences, {images} crash images checked");
    assert!(images > 100_000, "{images} images");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_checker_catches_a_missing_persist() {
    let dir = temp("broken");
    let (log, ops) = record_history(&dir);
    let import = &ops[1];
    let position = |pred: &dyn Fn(&Event) -> bool| {
        (import.start..import.end).find(|&i| pred(&log[i])).expect("the import has such an event")
    };
    // The data extent is never flushed: after the commit, a crash can lose it.
    let data_flush = position(&|e| matches!(e, Event::Flush { len, .. } if *len == EXTENT));
    let mut no_flush = log.clone();
    no_flush[data_flush] = Event::Fence;
    let err = check_log(&no_flush, &ops).expect_err("a lost data flush went unnoticed");
    assert!(err.contains("import a") && err.contains("lost its memory"), "{err}");
    // No fence between the slot and the commit record: the commit can be durable first.
    let commit = position(&|e| matches!(e, Event::Store { offset, .. } if *offset == super::format::COMMIT_OFFSET));
    let mut no_fence = log.clone();
    assert!(matches!(no_fence[commit - 1], Event::Fence));
    no_fence.remove(commit - 1);
    let shifted: Vec<Op> = ops
        .iter()
        .map(|o| Op {
            name: o.name,
            start: o.start - usize::from(o.start >= commit),
            end: o.end - usize::from(o.end >= commit),
            old: o.old.clone(),
            new: o.new.clone(),
        })
        .collect();
    let err = check_log(&no_fence, &shifted).expect_err("a missing fence went unnoticed");
    assert!(err.contains("import a") && err.contains("corrupt"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
