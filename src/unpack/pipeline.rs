//! A layer's bytes across cores: one thread inflates the compressed stream into chunks, a
//! second hashes each (the diff id) and passes it on, and the caller's thread reads them as a
//! buffered stream (`BufRead`: it writes the files from the chunks themselves), then hands each
//! chunk's buffer back to the inflater. The channels between them are bounded, so a few
//! chunks are in memory whatever the layer's size.
//! `pipeline` makes nothing visible and decides nothing: the caller compares the digest.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

use sha2::{Digest as _, Sha256};

use crate::oci::Digest;

/// Bytes in one chunk.
const CHUNK: usize = 1 << 20;
/// Chunks each channel holds before its sender waits: with `CHUNK`, what bounds the memory an
/// unpack takes (at most 2 × 4 + 3 buffers of 1 MiB).
const IN_FLIGHT: usize = 4;

/// The uncompressed stream as the writer reads it: the chunks, in order, then EOF; an error of
/// the inflater (a corrupt stream, the size limit) comes out of `read` as it happened.
pub struct ChunkReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    spent: Sender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    let old = std::mem::replace(&mut self.chunk, c);
                    // The inflater may be gone already; the buffer is then just freed.
                    let _ = self.spent.send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The inflater reached the end (or stopped because a consumer did).
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.chunk[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.chunk.len());
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let held = self.fill_buf()?;
        let n = buf.len().min(held.len());
        buf[..n].copy_from_slice(&held[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// What the hasher saw: the stream's digest and length.
pub struct Measured {
    pub digest: Digest,
    pub bytes: u64,
}

/// Runs `consume` on the decompressed stream of `input` while other threads inflate and hash
/// it; returns what `consume` returned and, once the inflater and the hasher are done, the
/// digest of every byte the inflater produced. The inflater gives `limit_error()` instead of
/// producing more than `limit` bytes.
pub fn run<T>(
    input: Box<dyn Read + Send + '_>,
    limit: u64,
    limit_error: fn() -> io::Error,
    consume: impl FnOnce(&mut ChunkReader) -> T,
) -> (T, io::Result<Measured>) {
    let (to_hasher, from_inflater) = sync_channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
    let (to_writer, from_hasher) = sync_channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
    let (spent, recycled) = channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let inflater = s.spawn(move || inflate(input, limit, limit_error, &to_hasher, &recycled));
        let hasher = s.spawn(move || {
            let mut h = Sha256::new();
            let mut bytes = 0u64;
            for c in from_inflater {
                if let Ok(c) = &c {
                    h.update(c);
                    bytes += c.len() as u64;
                }
                if to_writer.send(c).is_err() {
                    break;
                }
            }
            Measured {
                digest: Digest::from_hasher(h),
                bytes,
            }
        });
        let mut reader = ChunkReader {
            rx: from_hasher,
            spent,
            chunk: Vec::new(),
            pos: 0,
        };
        let out = consume(&mut reader);
        // A consumer that stopped early hangs up here; the hasher, then the inflater, stop at
        // their next chunk.
        drop(reader);
        let inflated = inflater
            .join()
            .map_err(|_| io::Error::other("the inflating thread panicked"));
        let measured = hasher
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"));
        (out, inflated.and(measured))
    })
}

/// Reads `input` to its end in chunks of `CHUNK` (in buffers the writer gave back, where it
/// has), each to the hasher; an error goes down the same way and ends it.
fn inflate(
    mut input: Box<dyn Read + Send + '_>,
    limit: u64,
    limit_error: fn() -> io::Error,
    to_hasher: &SyncSender<io::Result<Vec<u8>>>,
    recycled: &Receiver<Vec<u8>>,
) {
    let mut total = 0u64;
    loop {
        let mut buf = recycled.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut n = 0;
        while n < CHUNK {
            match input.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = to_hasher.send(Err(e));
                    return;
                }
            }
        }
        if n == 0 {
            return;
        }
        total += n as u64;
        if total > limit {
            let _ = to_hasher.send(Err(limit_error()));
            return;
        }
        buf.truncate(n);
        // A closed channel means the writer is done (it refused the layer): stop.
        if to_hasher.send(Ok(buf)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> io::Error {
        io::Error::other("too big")
    }

    #[test]
    fn the_writer_reads_every_byte_in_order_and_the_digest_covers_them() {
        let data: Vec<u8> = (0..3 * CHUNK + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (got, measured) = run(
            Box::new(io::Cursor::new(data.clone())),
            u64::MAX,
            limit,
            |r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v).map(|_| v)
            },
        );
        assert_eq!(got.unwrap(), data);
        let m = measured.unwrap();
        assert_eq!(
            (m.digest, m.bytes),
            (Digest::of_bytes(&data), data.len() as u64)
        );
    }

    #[test]
    fn the_chunks_themselves_are_lent_in_order() {
        let data: Vec<u8> = (0..2 * CHUNK + 999).map(|i| (i % 253) as u8).collect();
        let (got, _) = run(
            Box::new(io::Cursor::new(data.clone())),
            u64::MAX,
            limit,
            |r| -> io::Result<(Vec<u8>, usize)> {
                let (mut v, mut most) = (Vec::new(), 0);
                loop {
                    let held = r.fill_buf()?;
                    if held.is_empty() {
                        return Ok((v, most));
                    }
                    // A part of what is held at a time, as a writer may take.
                    let n = held.len().min(300_000);
                    most = most.max(held.len());
                    v.extend_from_slice(&held[..n]);
                    r.consume(n);
                }
            },
        );
        let (v, most) = got.unwrap();
        assert_eq!(v, data);
        // Whole chunks are lent, not a copy in smaller pieces.
        assert_eq!(most, CHUNK);
    }

    #[test]
    fn past_the_limit_the_writer_gets_the_limit_error() {
        let data = vec![0u8; 2 * CHUNK];
        let (got, _) = run(Box::new(io::Cursor::new(data)), CHUNK as u64, limit, |r| {
            io::copy(r, &mut io::sink())
        });
        assert_eq!(got.unwrap_err().to_string(), "too big");
    }

    #[test]
    fn a_writer_that_stops_early_stops_the_inflater() {
        // An endless stream: the run ends only if hanging up stops the inflater.
        let (got, _) = run(Box::new(io::repeat(1)), u64::MAX, limit, |r| {
            let mut b = [0u8; 10];
            r.read_exact(&mut b).map(|()| b)
        });
        assert_eq!(got.unwrap(), [1u8; 10]);
    }
}
