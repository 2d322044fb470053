//! Reading a download while it lands: [`Landing`] is what the downloading thread tells (how
//! many bytes of the partial file are written, and when it is over), [`Follow`] a reader of
//! the partial file that waits for bytes not written yet. A layer is then unpacked as it
//! arrives instead of after. The bytes read are the file's, unverified: the reader's consumer
//! must check what it made of them (an unpack checks the layer's diff id) before using it.

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
}

/// The downloading side's news, shared with the reader.
#[derive(Default)]
pub struct Landing {
    state: Mutex<State>,
    moved: Condvar,
}

impl Landing {
    /// `written` bytes of the file are there (the download's progress callback); fewer than
    /// before means the download started over.
    pub fn written(&self, written: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.rewound |= written < s.written;
            s.written = written;
        }
        self.moved.notify_all();
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
                s = self
                    .landing
                    .moved
                    .wait(s)
                    .map_err(|_| io::Error::other("the download thread panicked"))?;
            }
        };
        // Opened once there are bytes: the download has created the file by then.
        let file = match &self.file {
            Some(f) => f,
            None => {
                use std::os::unix::fs::OpenOptionsExt;
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&self.path)?;
                self.file.insert(f)
            }
        };
        let want = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = loop {
            match file.read_at(&mut buf[..want], self.pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if n == 0 {
            // Said to be written, yet not there: the file was cut (a download starting over).
            return Err(self.started_over());
        }
        self.pos += n as u64;
        Ok(n)
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
