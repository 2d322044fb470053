//! Reading a download while it lands: [`Landing`] is what the downloading thread tells (how
//! many bytes of the partial file are written, and when it is over), [`Follow`] a reader of
//! the partial file that waits for bytes not written yet. A layer is then unpacked as it
//! arrives instead of after. The bytes read are the file's, unverified: the reader's consumer
//! must check what it made of them (an unpack checks the layer's diff id) before using it.
//! A reader in another process (the unpack helper) is told the news as [`News`] records on a
//! pipe and reads the file itself with [`Landed`]: the bytes cross no pipe.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

#[derive(Default)]
struct State {
    /// Bytes of the file written so far.
    written: u64,
    /// The download is over: `Some(true)` whole, `Some(false)` failed.
    over: Option<bool>,
    /// The download started over (went back to an offset it had passed, or one the reader
    /// had read): what was read may not be the blob.
    rewound: bool,
    /// The count the reader waits for: fewer bytes written wake no one. (Woken at every write
    /// of the download, a `News` reader made 7,000-12,000 context switches a 49 MB layer,
    /// against 760-1,080 so, and 860-1,860 when the bytes themselves crossed a pipe.)
    wake_at: u64,
}

/// The downloading side's news, shared with its one reader.
#[derive(Default)]
pub struct Landing {
    state: Mutex<State>,
    moved: Condvar,
}

impl Landing {
    /// `written` bytes of the file are there (the download's progress callback); fewer than
    /// before means the download started over.
    pub fn written(&self, written: u64) {
        let wake = match self.state.lock() {
            Ok(mut s) => {
                let back = written < s.written;
                s.rewound |= back;
                s.written = written;
                back || written >= s.wake_at
            }
            Err(_) => true,
        };
        if wake {
            self.moved.notify_all();
        }
    }

    /// The download is over, whole or not (the first word on it stands).
    pub fn over(&self, whole: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.over.get_or_insert(whole);
        }
        self.moved.notify_all();
    }

    /// Whether the download started over (what the reader read may then not be the blob).
    pub fn rewound(&self) -> bool {
        self.state.lock().map(|s| s.rewound).unwrap_or(true)
    }
}

/// Reads the file at `path` as far as the download wrote it, waiting for the rest; ends where
/// the download ended. A download that started over (or a file that shrank) is an error.
pub struct Follow<'a> {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    landing: &'a Landing,
}

impl<'a> Follow<'a> {
    pub fn new(path: PathBuf, landing: &'a Landing) -> Self {
        Follow {
            path,
            file: None,
            pos: 0,
            landing,
        }
    }

    fn started_over(&self) -> io::Error {
        if let Ok(mut s) = self.landing.state.lock() {
            s.rewound = true;
        }
        io::Error::other("the download started over")
    }
}

impl Read for Follow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let available = {
            let mut s = self
                .landing
                .state
                .lock()
                .map_err(|_| io::Error::other("the download thread panicked"))?;
            loop {
                if s.written < self.pos {
                    drop(s);
                    return Err(self.started_over());
                }
                if s.written > self.pos {
                    break s.written - self.pos;
                }
                match s.over {
                    Some(true) => return Ok(0),
                    Some(false) => return Err(io::Error::other("the download failed")),
                    None => {}
                }
                s.wake_at = self.pos + 1;
                s = self
                    .landing
                    .moved
                    .wait(s)
                    .map_err(|_| io::Error::other("the download thread panicked"))?;
            }
        };
        match read_written(&mut self.file, &self.path, self.pos, available, buf)? {
            // Said to be written, yet not there: the file was cut (a download starting over).
            0 => Err(self.started_over()),
            n => {
                self.pos += n as u64;
                Ok(n)
            }
        }
    }
}

/// Reads what of `buf` the file at `path` holds at `at`, at most `available` bytes (which are
/// said to be written): opened once, the first time (the download has created it by then);
/// 0 if the file holds none of them.
fn read_written(
    file: &mut Option<File>,
    path: &std::path::Path,
    at: u64,
    available: u64,
    buf: &mut [u8],
) -> io::Result<usize> {
    let file = match file {
        Some(f) => f,
        None => {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(path)?;
            file.insert(f)
        }
    };
    let want = buf
        .len()
        .min(usize::try_from(available).unwrap_or(usize::MAX));
    loop {
        match file.read_at(&mut buf[..want], at) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// The record [`News`] ends with when the download is whole.
const WHOLE: u64 = u64::MAX;

/// Bytes the download moves on between two records of [`News`], so that the helper is woken
/// a few hundred times a layer, not at each of the download's writes. The unpack runs behind
/// the download; only at the start may it wait for a step (under 2 ms at loopback speed).
const NEWS_STEP: u64 = 256 << 10;

/// A [`Landing`] as a stream for another process: 8-byte records (little endian), each how many
/// bytes of the file are written (the first as soon as there are any, then every
/// [`NEWS_STEP`] bytes or sooner if the count goes back), then [`WHOLE`] once the download is
/// whole; a failed download ends the stream without it.
pub struct News<'a> {
    landing: &'a Landing,
    sent: Option<u64>,
    done: bool,
}

impl<'a> News<'a> {
    pub fn new(landing: &'a Landing) -> Self {
        News {
            landing,
            sent: None,
            done: false,
        }
    }
}

impl Read for News<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if buf.len() < 8 {
            return Err(io::Error::other(
                "internal error: a news record needs 8 bytes",
            ));
        }
        let mut s = self
            .landing
            .state
            .lock()
            .map_err(|_| io::Error::other("the download thread panicked"))?;
        let record = loop {
            let due = match self.sent {
                None => s.written > 0,
                Some(sent) => s.written < sent || s.written >= sent + NEWS_STEP,
            };
            if due || (s.over.is_some() && self.sent != Some(s.written)) {
                self.sent = Some(s.written);
                break s.written;
            }
            match s.over {
                Some(true) => {
                    self.done = true;
                    break WHOLE;
                }
                Some(false) => {
                    self.done = true;
                    return Ok(0);
                }
                None => {}
            }
            s.wake_at = self.sent.map_or(1, |sent| sent + NEWS_STEP);
            s = self
                .landing
                .moved
                .wait(s)
                .map_err(|_| io::Error::other("the download thread panicked"))?;
        };
        buf[..8].copy_from_slice(&record.to_le_bytes());
        Ok(8)
    }
}

/// The other side of [`News`]: reads the file at `path` as far as the records from `news`
/// say it is written; ends after [`WHOLE`]. A stream that ends without it (the download
/// failed), a count that goes back, or a file shorter than said is an error.
pub struct Landed<R> {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    written: u64,
    whole: bool,
    news: R,
}

impl<R: Read> Landed<R> {
    pub fn new(path: PathBuf, news: R) -> Self {
        Landed {
            path,
            file: None,
            pos: 0,
            written: 0,
            whole: false,
            news,
        }
    }
}

impl<R: Read> Read for Landed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.written {
            if self.whole {
                return Ok(0);
            }
            let mut record = [0u8; 8];
            if let Err(e) = self.news.read_exact(&mut record) {
                return Err(match e.kind() {
                    io::ErrorKind::UnexpectedEof => io::Error::other("the download failed"),
                    _ => e,
                });
            }
            match u64::from_le_bytes(record) {
                WHOLE => self.whole = true,
                n if n < self.written => return Err(io::Error::other("the download started over")),
                n => self.written = n,
            }
        }
        match read_written(
            &mut self.file,
            &self.path,
            self.pos,
            self.written - self.pos,
            buf,
        )? {
            0 => Err(io::Error::other("the download started over")),
            n => {
                self.pos += n as u64;
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_what_lands_in_order_and_ends_with_the_download() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let landing = Landing::default();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut f = File::create(&path).unwrap();
                for (i, chunk) in data.chunks(7_000).enumerate() {
                    f.write_all(chunk).unwrap();
                    landing.written(((i + 1) * 7_000).min(data.len()) as u64);
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                landing.over(true);
            });
            let mut got = Vec::new();
            Follow::new(path.clone(), &landing)
                .read_to_end(&mut got)
                .unwrap();
            assert_eq!(got, data);
        });
        assert!(!landing.rewound());
    }

    /// A download as `News` tells it, read back by `Landed` on the other end of a pipe.
    fn through_a_pipe(path: &std::path::Path, landing: &Landing) -> io::Result<Vec<u8>> {
        let (rx, mut tx) = std::io::pipe().unwrap();
        std::thread::scope(|s| {
            s.spawn(move || {
                let _ = io::copy(&mut News::new(landing), &mut tx);
            });
            let mut got = Vec::new();
            Landed::new(path.to_path_buf(), rx)
                .read_to_end(&mut got)
                .map(|_| got)
        })
    }

    #[test]
    fn another_process_reads_the_file_as_the_news_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let landing = Landing::default();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let got = std::thread::scope(|s| {
            s.spawn(|| {
                let mut f = File::create(&path).unwrap();
                for (i, chunk) in data.chunks(9_000).enumerate() {
                    f.write_all(chunk).unwrap();
                    landing.written(((i + 1) * 9_000).min(data.len()) as u64);
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                // Bytes past the last count are not the download's.
                f.write_all(b"after").unwrap();
                landing.over(true);
            });
            through_a_pipe(&path, &landing)
        });
        assert_eq!(got.unwrap(), data);
    }

    #[test]
    fn the_other_process_sees_a_failed_or_restarted_download_as_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        std::fs::write(&path, b"0123456789").unwrap();
        let failed = Landing::default();
        failed.written(10);
        failed.over(false);
        let err = through_a_pipe(&path, &failed).unwrap_err();
        assert_eq!(err.to_string(), "the download failed");

        // Said to be written, yet the file is shorter: it was cut under the reader.
        let cut = Landing::default();
        cut.written(20);
        cut.over(true);
        let err = through_a_pipe(&path, &cut).unwrap_err();
        assert_eq!(err.to_string(), "the download started over");

        // A count that goes back.
        let (rx, mut tx) = std::io::pipe().unwrap();
        for n in [8u64, 4] {
            tx.write_all(&n.to_le_bytes()).unwrap();
        }
        drop(tx);
        let mut r = Landed::new(path.clone(), rx);
        let mut buf = [0u8; 8];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"01234567");
        assert_eq!(
            r.read(&mut buf).unwrap_err().to_string(),
            "the download started over"
        );
    }

    #[test]
    fn a_download_that_starts_over_or_fails_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        std::fs::write(&path, b"0123456789").unwrap();
        let landing = Landing::default();
        landing.written(10);
        let mut r = Follow::new(path.clone(), &landing);
        let mut buf = [0u8; 10];
        r.read_exact(&mut buf).unwrap();
        landing.written(0);
        assert!(r.read(&mut buf).is_err());
        assert!(landing.rewound());

        let failed = Landing::default();
        failed.over(false);
        let mut r = Follow::new(path, &failed);
        assert!(r.read(&mut buf).is_err());
        assert!(!failed.rewound());
    }
}
