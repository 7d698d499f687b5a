//! Writing a large result file past the page cache.
//!
//! A query's output file (hundreds of MB for a training set) is written once and read later,
//! usually by another process. Written through the page cache, every byte is first copied
//! into fresh cache pages, which the kernel must find and zero: on the 2-core VM of our
//! benches, 14% of `get-historical-features`' CPU for a 480 MB output, on the thread that
//! feeds the encoders. [`DirectFile`] instead collects the bytes in aligned blocks and writes
//! them with `O_DIRECT` from a thread of its own, so the device copies them straight from two
//! reused buffers while the query goes on. The last, partial block is padded to the
//! alignment and the file cut back to its length. Where the file system refuses `O_DIRECT`
//! (tmpfs, some network mounts) the same writer writes through the page cache.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Offset, length and address alignment of `O_DIRECT` writes: the largest logical block
/// size of common devices.
const ALIGN: usize = 4096;
/// Bytes per write: large enough that the device streams, small enough to stay in cache.
const BLOCK: usize = 4 << 20;
/// Blocks in circulation: one being filled, one being written.
const BUFFERS: usize = 2;

/// A block of `BLOCK` bytes whose first byte is `ALIGN`-aligned.
struct Aligned {
    storage: Vec<u8>,
    start: usize,
}

impl Aligned {
    fn new() -> Self {
        let storage = vec![0u8; BLOCK + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        Aligned { storage, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + BLOCK]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + BLOCK]
    }
}

/// What the writer thread is asked to do.
enum Job {
    /// Write the first `len` bytes of the block (a multiple of [`ALIGN`] unless it is the
    /// last write of a file without `O_DIRECT`).
    Write(Aligned, usize),
    /// Cut the file to this length (after a padded last block) and sync nothing more.
    SetLen(u64),
}

/// A file written in large blocks from a thread of its own, with `O_DIRECT` where the file
/// system allows it. Call [`DirectFile::finish`]: dropping it unfinished abandons the tail.
pub struct DirectFile {
    block: Option<Aligned>,
    filled: usize,
    written: u64,
    direct: bool,
    jobs: Option<SyncSender<Job>>,
    free: Receiver<Aligned>,
    allocated: usize,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl DirectFile {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> io::Result<Self> {
        Self::create_with(path, true)
    }

    /// Creates (or truncates) `path`, with `O_DIRECT` when `try_direct` and the file system
    /// allows it.
    fn create_with(path: &Path, try_direct: bool) -> io::Result<Self> {
        let (file, direct) = match open(path, try_direct) {
            Ok(file) => (file, try_direct),
            Err(e) if try_direct && e.raw_os_error() == Some(libc::EINVAL) => {
                (open(path, false)?, false)
            }
            Err(e) => return Err(e),
        };
        let (jobs, incoming) = sync_channel::<Job>(BUFFERS);
        let (returned, free) = sync_channel::<Aligned>(BUFFERS + 1);
        let thread = std::thread::Builder::new()
            .name("larder-output".into())
            .spawn({
                let path = path.to_path_buf();
                move || write_blocks(path, file, incoming, returned)
            })?;
        Ok(DirectFile {
            block: None,
            filled: 0,
            written: 0,
            direct,
            jobs: Some(jobs),
            free,
            allocated: 0,
            thread: Some(thread),
        })
    }

    /// A block to fill: a returned one, a new one while fewer than [`BUFFERS`] exist, or
    /// the next one the writer thread returns.
    fn next_block(&mut self) -> io::Result<Aligned> {
        if let Ok(block) = self.free.try_recv() {
            return Ok(block);
        }
        if self.allocated < BUFFERS {
            self.allocated += 1;
            return Ok(Aligned::new());
        }
        match self.free.recv() {
            Ok(block) => Ok(block),
            Err(_) => Err(self.failure()),
        }
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job).is_ok());
        if sent == Some(true) {
            Ok(())
        } else {
            Err(self.failure())
        }
    }

    /// The writer thread's error, once it has stopped.
    fn failure(&mut self) -> io::Error {
        self.jobs = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the output writer thread panicked"),
            _ => io::Error::other("the output writer thread stopped"),
        }
    }

    /// Writes the last bytes, cuts the file to its length and waits for every write.
    pub fn finish(mut self) -> io::Result<u64> {
        let length = self.written + self.filled as u64;
        if let Some(mut block) = self.block.take() {
            let len = if self.direct {
                let padded = self.filled.next_multiple_of(ALIGN);
                block.bytes_mut()[self.filled..padded].fill(0);
                padded
            } else {
                self.filled
            };
            if len > 0 {
                self.send(Job::Write(block, len))?;
            }
            if len != self.filled {
                self.send(Job::SetLen(length))?;
            }
        }
        self.jobs = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result.map(|()| length),
            Some(Err(_)) => Err(io::Error::other("the output writer thread panicked")),
            None => Err(io::Error::other("the output writer thread stopped")),
        }
    }
}

impl Write for DirectFile {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let mut block = match self.block.take() {
                Some(block) => block,
                None => self.next_block()?,
            };
            let take = data.len().min(BLOCK - self.filled);
            block.bytes_mut()[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == BLOCK {
                self.send(Job::Write(block, BLOCK))?;
                self.written += BLOCK as u64;
                self.filled = 0;
            } else {
                self.block = Some(block);
            }
        }
        Ok(total)
    }

    /// Blocks are written when full; the rest waits for [`DirectFile::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn open(path: &Path, direct: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(path)
}

/// The writer thread: writes each block, returns it for reuse, stops at the first error.
fn write_blocks(
    path: PathBuf,
    mut file: File,
    jobs: Receiver<Job>,
    returned: SyncSender<Aligned>,
) -> io::Result<()> {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Write(block, len) => {
                match file.write_all(&block.bytes()[..len]) {
                    // A file system may accept O_DIRECT at open and refuse the write.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        // Reopened without it, at the same place.
                        let at = file.stream_position()?;
                        file = OpenOptions::new().write(true).open(&path)?;
                        file.seek(SeekFrom::Start(at))?;
                        file.write_all(&block.bytes()[..len])?;
                    }
                    other => other?,
                }
                // The filler may have finished and gone; then the block is not needed.
                let _ = returned.try_send(block);
            }
            Job::SetLen(length) => file.set_len(length)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths around the alignment and the block size, written in uneven pieces, read back
    /// byte for byte at exactly their length, past the page cache and through it.
    #[test]
    fn writes_every_byte_at_its_length() {
        let dir = tempfile::tempdir().unwrap();
        for try_direct in [true, false] {
            for length in [
                0,
                1,
                ALIGN - 1,
                ALIGN,
                ALIGN + 1,
                BLOCK - 1,
                BLOCK,
                BLOCK + 7,
                3 * BLOCK + ALIGN * 5 + 3,
            ] {
                let path = dir.path().join(format!("out-{try_direct}-{length}"));
                let data: Vec<u8> = (0..length).map(|i| (i * 31 % 251) as u8).collect();
                let mut file = DirectFile::create_with(&path, try_direct).unwrap();
                let case = format!("length {length}, O_DIRECT {}", file.direct);
                for piece in data.chunks(1_000_003) {
                    // Uneven writes: a byte, then the rest of the piece.
                    let (head, tail) = piece.split_at(1.min(piece.len()));
                    file.write_all(head).unwrap();
                    file.write_all(tail).unwrap();
                }
                assert_eq!(file.finish().unwrap(), length as u64, "{case}");
                let back = std::fs::read(&path).unwrap();
                assert_eq!(back.len(), length, "file length, {case}");
                assert!(back == data, "contents differ, {case}");
            }
        }
    }

    /// A file in a folder that is gone cannot be created: the error says so.
    #[test]
    fn creating_in_a_missing_folder_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("out.parquet");
        let err = DirectFile::create(&path).err().expect("no folder");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
