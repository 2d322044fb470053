//! A strict streaming reader of layer tars, which reads them as GNU tar does: ustar, v7, GNU
//! (long names, old sparse `S`, dumpdirs `D`, volume labels) and PAX (local `x`, Solaris `X`,
//! global `g`, sparse formats 0.0, 0.1 and 1.0). Built for hostile input: headers are
//! checksummed, every number is range-checked, extended headers and sparse maps are bounded,
//! and what an archive cannot mean is refused with the entry and what is wrong with it.
//! `archive` does no filesystem I/O and never seeks; it reads its input once, front to back.

use std::io::{self, BufRead, Read};

pub const BLOCK: usize = 512;
/// The most bytes one extended header (PAX records, a GNU long name) may hold, and all global
/// PAX headers together.
pub const MAX_EXTENDED: u64 = 1 << 20;
/// The most data chunks one sparse file may have.
pub const MAX_SPARSE_CHUNKS: usize = 1 << 18;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// A PAX record: key and value.
pub type Record = (Vec<u8>, Vec<u8>);

/// A run of a sparse file's stored bytes: `len` bytes at `offset`; what no chunk covers is a hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub len: u64,
}

/// One entry, its extended headers (long names, PAX records, sparse maps) already applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name as the archive has it (not yet made relative or checked).
    pub path: Vec<u8>,
    /// A symlink's target or a hard link's existing name.
    pub link: Vec<u8>,
    pub kind: Kind,
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nanos: u32,
    /// A file's size once unpacked, holes included.
    pub size: u64,
    /// `SCHILY.xattr.*` records: every name, in order, the last of a name kept.
    pub xattrs: Vec<Record>,
    /// For a sparse file, where its stored bytes go (sorted, disjoint, within `size`).
    pub sparse: Option<Vec<Chunk>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("entry `{entry}` (header at byte {at}): {what}")]
    Malformed {
        entry: String,
        at: u64,
        what: String,
    },
    #[error("{0}")]
    Io(io::Error),
}

/// What extended headers said about the entry that follows them.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    /// The last PAX header's data, its name and where it is.
    records: Option<(Vec<u8>, String, u64)>,
}

/// The data of the entry last returned, still to be read or skipped.
#[derive(Default)]
struct Data {
    entry: String,
    at: u64,
    chunks: Vec<Chunk>,
    next: usize,
    offset: u64,
    chunk_left: u64,
    /// Stored bytes not read yet (chunks and anything the caller does not read).
    left: u64,
    pad: u64,
}

impl Data {
    /// Moves on to a chunk with bytes left to read, if the current one has none; false at the
    /// end of the file's data.
    fn next_chunk(&mut self) -> bool {
        while self.chunk_left == 0 {
            let Some(c) = self.chunks.get(self.next) else {
                return false;
            };
            self.next += 1;
            self.offset = c.offset;
            self.chunk_left = c.len;
        }
        true
    }
}

pub struct Reader<R> {
    inner: R,
    pos: u64,
    globals: Vec<Record>,
    global_bytes: u64,
    data: Data,
    done: bool,
}

fn pad_of(n: u64) -> u64 {
    (BLOCK as u64 - n % BLOCK as u64) % BLOCK as u64
}

/// A C string in a header field: up to its first NUL.
fn cstr(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|&b| b == 0)
        .map_or(field, |n| &field[..n])
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// A numeric header field as GNU tar reads it (`from_header`): one leading NUL and leading
/// blanks skipped, then octal digits ended by the field's end, a NUL or a blank; or base-256
/// (a first byte of 0x80, or 0xff for a negative number, then big-endian bytes to the field's
/// end); a field with no digits at all is 0. `None`: not a number, or past an `i64`.
pub fn number(field: &[u8]) -> Option<i64> {
    let mut i = usize::from(field.first() == Some(&0));
    while i < field.len() && is_space(field[i]) {
        i += 1;
    }
    if i == field.len() {
        return None;
    }
    let c = field[i];
    let value = if (b'0'..=b'7').contains(&c) {
        let mut v: i64 = 0;
        while i < field.len() && (b'0'..=b'7').contains(&field[i]) {
            v = v.checked_mul(8)?.checked_add(i64::from(field[i] - b'0'))?;
            i += 1;
        }
        v
    } else if (c == 0x80 || c == 0xff) && i + 2 <= field.len() {
        let mut v: i128 = if c == 0xff { -1 } else { 0 };
        for &b in &field[i + 1..] {
            v = v * 256 + i128::from(b);
            if v > i128::from(i64::MAX) || v < i128::from(i64::MIN) {
                return None;
            }
        }
        i = field.len();
        i64::try_from(v).ok()?
    } else {
        0
    };
    if i != field.len() && field[i] != 0 && !is_space(field[i]) {
        return None;
    }
    Some(value)
}

/// A decimal PAX number: optional blanks, an optional sign, digits, nothing after.
fn decimal(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: i128 = 0;
    for b in digits.bytes() {
        n = n * 10 + i128::from(b - b'0');
        if n > i128::from(i64::MAX) + 1 {
            return None;
        }
    }
    i64::try_from(if neg { -n } else { n }).ok()
}

fn unsigned(v: &[u8]) -> Option<u64> {
    decimal(v).and_then(|n| u64::try_from(n).ok())
}

/// A PAX time (`[-]SECONDS[.FRACTION]`) as seconds and nanoseconds, rounded towards minus
/// infinity as GNU tar does (`-1.5` is 1.5 s before the epoch: seconds -2, nanos 500000000).
pub fn pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (body.contains('.') && frac.is_empty()) {
        return None;
    }
    let mut secs: i64 = 0;
    for b in int.bytes() {
        secs = secs.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    let mut nanos: u32 = 0;
    for b in frac.bytes().chain(std::iter::repeat(b'0')).take(9) {
        nanos = nanos * 10 + u32::from(b - b'0');
    }
    let beyond = frac.bytes().skip(9).any(|b| b != b'0');
    if !neg {
        return Some((secs, nanos));
    }
    if nanos == 0 && !beyond {
        return Some((secs.checked_neg()?, 0));
    }
    let nanos = 1_000_000_000 - nanos - u32::from(beyond);
    Some((secs.checked_neg()?.checked_sub(1)?, nanos))
}

/// Splits PAX extended header data into its records, by their lengths (a value may hold any
/// byte, newlines included), as GNU tar's `decode_record` does: `LEN KEY=VALUE\n`, where LEN
/// counts the whole record; blanks may precede LEN; a NUL where a record would start ends them.
pub fn pax_records(data: &[u8]) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let rest = &data[start..];
        let mut p = 0;
        while p < rest.len() && (rest[p] == b' ' || rest[p] == b'\t') {
            p += 1;
        }
        match rest.get(p) {
            None | Some(0) => break,
            Some(b) if !b.is_ascii_digit() => {
                return Err("malformed PAX header: a record has no length".into())
            }
            _ => {}
        }
        let mut len: usize = 0;
        while p < rest.len() && rest[p].is_ascii_digit() {
            len = len
                .checked_mul(10)
                .and_then(|l| l.checked_add(usize::from(rest[p] - b'0')))
                .ok_or("malformed PAX header: a record's length is out of range")?;
            p += 1;
        }
        if len > rest.len() || len <= p {
            return Err(format!(
                "malformed PAX header: a record's length ({len}) is out of range"
            ));
        }
        let record = &rest[..len];
        let len_end = p;
        while p < len && (record[p] == b' ' || record[p] == b'\t') {
            p += 1;
        }
        if p == len_end {
            return Err("malformed PAX header: no blank after a record's length".into());
        }
        let Some(eq) = record[p..].iter().position(|&b| b == b'=' || b == 0) else {
            return Err("malformed PAX header: a record has no `=`".into());
        };
        if record[p + eq] != b'=' {
            return Err("malformed PAX header: a record has no `=`".into());
        }
        if record[len - 1] != b'\n' || p + eq + 1 > len - 1 {
            return Err("malformed PAX header: a record does not end with a newline".into());
        }
        let key = record[p..p + eq].to_vec();
        let value = record[p + eq + 1..len - 1].to_vec();
        out.push((key, value));
        start += len;
    }
    Ok(out)
}

/// The PAX records that apply to one entry (global ones first, then its own).
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<(i64, u32)>,
    xattrs: Vec<Record>,
    sparse_major: Option<u64>,
    sparse_minor: Option<u64>,
    sparse_name: Option<Vec<u8>>,
    sparse_realsize: Option<u64>,
    sparse_numblocks: Option<u64>,
    sparse_map: Option<Vec<Chunk>>,
    sparse_offset: Option<u64>,
}

impl Pax {
    /// A GNU sparse file of a format this reader knows (0.0, 0.1, 1.0); one of another
    /// version is a plain file, as GNU tar and Go read it.
    fn is_sparse(&self) -> bool {
        match (self.sparse_major, self.sparse_minor) {
            (Some(1), Some(0)) | (Some(0), Some(0) | Some(1)) => true,
            (None, None) => self.sparse_map.is_some(),
            _ => false,
        }
    }

    fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let bad = || {
            format!(
                "malformed PAX header: invalid {}={}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value).escape_debug()
            )
        };
        let id = |v: &[u8]| {
            unsigned(v)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(bad)
        };
        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            self.xattrs.retain(|(k, _)| k != name);
            self.xattrs.push((name.to_vec(), value.to_vec()));
            return Ok(());
        }
        // An empty value undoes the record (POSIX): the header's field applies again.
        let empty = value.is_empty();
        match key {
            b"path" => self.path = (!empty).then(|| cstr(value).to_vec()),
            b"linkpath" => self.linkpath = (!empty).then(|| cstr(value).to_vec()),
            b"size" if empty => self.size = None,
            b"size" => self.size = Some(unsigned(value).ok_or_else(bad)?),
            b"uid" if empty => self.uid = None,
            b"uid" => self.uid = Some(id(value)?),
            b"gid" if empty => self.gid = None,
            b"gid" => self.gid = Some(id(value)?),
            b"mtime" if empty => self.mtime = None,
            b"mtime" => self.mtime = Some(pax_time(value).ok_or_else(bad)?),
            b"atime" | b"ctime" if !empty => {
                pax_time(value).ok_or_else(bad)?;
            }
            b"GNU.sparse.major" => self.sparse_major = Some(unsigned(value).ok_or_else(bad)?),
            b"GNU.sparse.minor" => self.sparse_minor = Some(unsigned(value).ok_or_else(bad)?),
            b"GNU.sparse.name" => self.sparse_name = (!empty).then(|| cstr(value).to_vec()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
                self.sparse_realsize = Some(unsigned(value).ok_or_else(bad)?)
            }
            b"GNU.sparse.numblocks" => {
                let n = unsigned(value).ok_or_else(bad)?;
                if n > MAX_SPARSE_CHUNKS as u64 {
                    return Err(format!(
                        "its sparse map has {n} chunks, more than the {MAX_SPARSE_CHUNKS} allowed"
                    ));
                }
                self.sparse_numblocks = Some(n);
                self.sparse_map = Some(Vec::new());
                self.sparse_offset = None;
            }
            b"GNU.sparse.offset" => {
                let map = self.sparse_map.get_or_insert_with(Vec::new);
                if self.sparse_offset.is_some()
                    || self.sparse_numblocks.is_some_and(|n| map.len() as u64 >= n)
                {
                    return Err(format!(
                        "malformed PAX header: excess GNU.sparse.offset={}",
                        String::from_utf8_lossy(value)
                    ));
                }
                self.sparse_offset = Some(unsigned(value).ok_or_else(bad)?);
            }
            b"GNU.sparse.numbytes" => {
                let Some(offset) = self.sparse_offset.take() else {
                    return Err(format!(
                        "malformed PAX header: GNU.sparse.numbytes={} has no GNU.sparse.offset",
                        String::from_utf8_lossy(value)
                    ));
                };
                let len = unsigned(value).ok_or_else(bad)?;
                let map = self.sparse_map.get_or_insert_with(Vec::new);
                if map.len() >= MAX_SPARSE_CHUNKS {
                    return Err(format!(
                        "its sparse map has more than the {MAX_SPARSE_CHUNKS} chunks allowed"
                    ));
                }
                map.push(Chunk { offset, len });
            }
            b"GNU.sparse.map" => {
                let text = std::str::from_utf8(value).map_err(|_| bad())?;
                let mut map = Vec::new();
                if !text.is_empty() {
                    let nums: Vec<&str> = text.split(',').collect();
                    if nums.len() % 2 != 0 {
                        return Err(
                            "malformed PAX header: GNU.sparse.map has an odd number of values"
                                .into(),
                        );
                    }
                    if nums.len() / 2 > MAX_SPARSE_CHUNKS {
                        return Err(format!(
                            "its sparse map has more than the {MAX_SPARSE_CHUNKS} chunks allowed"
                        ));
                    }
                    for pair in nums.chunks(2) {
                        let n = |s: &str| unsigned(s.as_bytes()).filter(|_| !s.contains(' '));
                        let (Some(offset), Some(len)) = (n(pair[0]), n(pair[1])) else {
                            return Err(bad());
                        };
                        map.push(Chunk { offset, len });
                    }
                }
                self.sparse_map = Some(map);
                self.sparse_offset = None;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Checks a sparse map against the file's size and its stored bytes.
fn check_map(map: &[Chunk], size: u64, stored: u64) -> Result<(), String> {
    let mut end = 0u64;
    let mut total = 0u64;
    for c in map {
        let Some(c_end) = c.offset.checked_add(c.len) else {
            return Err("its sparse map has a chunk past any file size".into());
        };
        if c.offset < end {
            return Err(format!(
                "its sparse map is out of order or overlaps (a chunk at {} after one ending at {end})",
                c.offset
            ));
        }
        if c_end > size {
            return Err(format!(
                "its sparse map has a chunk ending at {c_end}, past the file's size {size}"
            ));
        }
        end = c_end;
        total = total.saturating_add(c.len);
    }
    if total != stored {
        return Err(format!(
            "its sparse map holds {total} bytes, but the archive stores {stored}"
        ));
    }
    Ok(())
}

fn malformed(entry: &str, at: u64, what: impl Into<String>) -> Error {
    let mut entry = entry.to_string();
    if entry.len() > 200 {
        let mut cut = 200;
        while !entry.is_char_boundary(cut) {
            cut -= 1;
        }
        entry.truncate(cut);
        entry.push('…');
    }
    Error::Malformed {
        entry,
        at,
        what: what.into(),
    }
}

const CUT_SHORT: &str = "the archive ends in the middle of it";

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            pos: 0,
            globals: Vec::new(),
            global_bytes: 0,
            data: Data::default(),
            done: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The bytes of the stream this reader holds on to between entries.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.globals
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            + self.data.chunks.len() * std::mem::size_of::<Chunk>()
    }

    /// Reads as much of `buf` as the input holds; fewer bytes only at its end.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    /// Fills `buf`, or fails naming `entry` when the input ends first.
    fn fill(&mut self, buf: &mut [u8], entry: &str, at: u64) -> Result<(), Error> {
        if self.read_full(buf)? < buf.len() {
            return Err(malformed(entry, at, CUT_SHORT));
        }
        Ok(())
    }

    fn skip(&mut self, mut n: u64, entry: &str, at: u64) -> Result<(), Error> {
        let mut scratch = [0u8; 8192];
        while n > 0 {
            let k = n.min(scratch.len() as u64) as usize;
            self.fill(&mut scratch[..k], entry, at)?;
            n -= k as u64;
        }
        Ok(())
    }

    /// The data of an extended header: `size` bytes (at most `MAX_EXTENDED`) and its padding.
    fn extended(&mut self, size: u64, entry: &str, at: u64) -> Result<Vec<u8>, Error> {
        if size > MAX_EXTENDED {
            return Err(malformed(
                entry,
                at,
                format!(
                    "its extended header holds {size} bytes, more than the {MAX_EXTENDED} allowed"
                ),
            ));
        }
        let mut buf = vec![0u8; size as usize];
        self.fill(&mut buf, entry, at)?;
        self.skip(pad_of(size), entry, at)?;
        Ok(buf)
    }

    /// The next entry, or `None` at the end of the archive. What the caller did not read of the
    /// previous entry's data is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, Error> {
        if self.done {
            return Ok(None);
        }
        let d = std::mem::take(&mut self.data);
        self.skip(d.left + d.pad, &d.entry, d.at)?;
        let mut pending = Pending::default();
        let mut h = [0u8; BLOCK];
        loop {
            let at = self.pos;
            // The input's end, a partial block or a zero block end the archive, extended
            // headers that describe nothing included (GNU tar reads them so, silently).
            if self.read_full(&mut h)? < BLOCK || h.iter().all(|&b| b == 0) {
                self.done = true;
                return Ok(None);
            }
            if let Some(e) = self.header(&h, at, &mut pending)? {
                return Ok(Some(e));
            }
        }
    }

    /// One header: `Some` for an entry, `None` for an extended header folded into `pending`.
    fn header(
        &mut self,
        h: &[u8; BLOCK],
        at: u64,
        pending: &mut Pending,
    ) -> Result<Option<Entry>, Error> {
        let name = String::from_utf8_lossy(cstr(&h[..100])).into_owned();
        let bad = |what: String| malformed(&name, at, what);
        // GNU tar accepts the sum of the bytes taken as unsigned or as signed.
        let (mut unsigned_sum, mut signed_sum) = (0i64, 0i64);
        for (i, &b) in h.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned_sum += i64::from(b);
            signed_sum += i64::from(b as i8);
        }
        let recorded = match h[148] {
            0x80 | 0xff => None,
            _ => number(&h[148..156]),
        };
        match recorded {
            Some(r) if r == unsigned_sum || r == signed_sum => {}
            _ => {
                return Err(bad(
                    "its header checksum is wrong (this is not a tar archive, or a corrupt one)"
                        .into(),
                ))
            }
        }
        let typeflag = h[156];
        let header_size = || -> Result<u64, Error> {
            field(h, 124..136, "size", &bad).and_then(|s| {
                u64::try_from(s).map_err(|_| bad(format!("its size is negative ({s})")))
            })
        };
        match typeflag {
            b'g' => {
                let data = self.extended(header_size()?, &name, at)?;
                self.global_bytes += data.len() as u64;
                if self.global_bytes > MAX_EXTENDED {
                    return Err(bad(format!(
                        "its global headers hold more than the {MAX_EXTENDED} bytes allowed"
                    )));
                }
                // Its records are checked where they apply, as GNU tar does.
                self.globals.extend(pax_records(&data).map_err(bad)?);
                return Ok(None);
            }
            b'x' | b'X' => {
                // Only the last one before an entry counts; it is read with the entry.
                pending.records = Some((self.extended(header_size()?, &name, at)?, name, at));
                return Ok(None);
            }
            b'L' | b'K' => {
                let data = self.extended(header_size()?, &name, at)?;
                let text = cstr(&data).to_vec();
                if typeflag == b'L' {
                    pending.long_name = Some(text);
                } else {
                    pending.long_link = Some(text);
                }
                return Ok(None);
            }
            b'V' => {
                // A GNU volume label names the archive, not a file.
                let size = header_size()?;
                self.skip(size + pad_of(size), &name, at)?;
                *pending = Pending::default();
                return Ok(None);
            }
            b'M' => {
                return Err(bad(
                    "it continues a file from another volume of a multi-volume archive".into(),
                ))
            }
            _ => {}
        }
        let pending = std::mem::take(pending);
        let local = match &pending.records {
            Some((data, x_name, x_at)) => {
                pax_records(data).map_err(|what| malformed(x_name, *x_at, what))?
            }
            None => Vec::new(),
        };
        let mut pax = Pax::default();
        for (k, v) in self.globals.iter().chain(&local) {
            pax.apply(k, v).map_err(bad)?;
        }
        let path = match (&pax.sparse_name, &pax.path, pending.long_name) {
            (Some(p), _, _) | (None, Some(p), _) => p.clone(),
            (None, None, Some(l)) => l,
            (None, None, None) => {
                let mut p = Vec::new();
                let prefix = cstr(&h[345..500]);
                if &h[257..263] == b"ustar\0" && !prefix.is_empty() {
                    p.extend_from_slice(prefix);
                    p.push(b'/');
                }
                p.extend_from_slice(cstr(&h[..100]));
                p
            }
        };
        let name = String::from_utf8_lossy(&path).into_owned();
        let bad = |what: String| malformed(&name, at, what);
        let link = match (pax.linkpath.take(), pending.long_link) {
            (Some(l), _) | (None, Some(l)) => l,
            (None, None) => cstr(&h[157..257]).to_vec(),
        };
        let mode = (field(h, 100..108, "mode", &bad)? & 0o7777) as u32;
        let id = |range: std::ops::Range<usize>, what: &str| -> Result<u32, Error> {
            let n = field(h, range, what, &bad)?;
            u32::try_from(n).map_err(|_| bad(format!("its {what} ({n}) is out of range")))
        };
        let uid = match pax.uid {
            Some(u) => u,
            None => id(108..116, "uid")?,
        };
        let gid = match pax.gid {
            Some(g) => g,
            None => id(116..124, "gid")?,
        };
        let (mtime, mtime_nanos) = match pax.mtime {
            Some(t) => t,
            None => (field(h, 136..148, "mtime", &bad)?, 0),
        };
        let stored = match pax.size {
            Some(s) => {
                // Two readers must never see two different archives in one.
                let header = header_size()?;
                if header != 0 && header != s && !header_only(typeflag, &path) {
                    return Err(bad(format!(
                        "its PAX size ({s}) disagrees with its header size ({header})"
                    )));
                }
                s
            }
            None => header_size()?,
        };
        let kind = match typeflag {
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            // A dumpdir's data lists the directory's names, for incremental restores.
            b'5' | b'D' => Kind::Dir,
            b'6' => Kind::Fifo,
            // An old V7 directory: a regular entry whose name ends in `/`.
            b'0' | 0 | b'7' if path.ends_with(b"/") => Kind::Dir,
            // Unknown types are regular files, as GNU tar extracts them.
            _ => Kind::File,
        };
        // The bytes the archive holds for this entry.
        let archived = if header_only(typeflag, &path) {
            0
        } else {
            stored
        };
        let mut entry = Entry {
            path,
            link,
            kind,
            mode,
            uid,
            gid,
            mtime,
            mtime_nanos,
            size: if kind == Kind::File { stored } else { 0 },
            xattrs: std::mem::take(&mut pax.xattrs),
            sparse: None,
        };
        let mut content = stored;
        if kind == Kind::File && typeflag == b'S' {
            let (map, size) = self.old_gnu_sparse(h, &name, at)?;
            check_map(&map, size, stored).map_err(bad)?;
            entry.size = size;
            entry.sparse = Some(map);
        } else if kind == Kind::File && pax.is_sparse() {
            if pax.sparse_offset.is_some() {
                return Err(bad(
                    "malformed PAX header: GNU.sparse.offset has no GNU.sparse.numbytes".into(),
                ));
            }
            let size = pax.sparse_realsize.ok_or_else(|| {
                bad("it is a PAX sparse file with no GNU.sparse.size or GNU.sparse.realsize".into())
            })?;
            let map = if pax.sparse_major == Some(1) {
                let (map, used) = self.sparse_map_1_0(stored, &name, at)?;
                content = stored - used;
                map
            } else {
                pax.sparse_map.unwrap_or_default()
            };
            check_map(&map, size, content).map_err(bad)?;
            entry.size = size;
            entry.sparse = Some(map);
        }
        let chunks = match (&entry.sparse, kind) {
            (Some(map), _) => map.clone(),
            (None, Kind::File) => vec![Chunk {
                offset: 0,
                len: stored,
            }],
            _ => Vec::new(),
        };
        self.data = Data {
            entry: name,
            at,
            chunks,
            next: 0,
            offset: 0,
            chunk_left: 0,
            left: if kind == Kind::File {
                content
            } else {
                archived
            },
            pad: pad_of(archived),
        };
        Ok(Some(entry))
    }

    /// An old GNU sparse header's map (four chunks in the header, 21 more in each extension
    /// block that follows it) and the file's real size.
    fn old_gnu_sparse(
        &mut self,
        h: &[u8; BLOCK],
        name: &str,
        at: u64,
    ) -> Result<(Vec<Chunk>, u64), Error> {
        let bad = |what: String| malformed(name, at, what);
        let num = |f: &[u8], what: &str| -> Result<u64, Error> {
            number(f)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| bad(format!("its sparse header's {what} is not a number")))
        };
        // An entry whose size field starts with a NUL ends the map.
        let take = |area: &[u8], map: &mut Vec<Chunk>| -> Result<bool, Error> {
            for e in area.chunks_exact(24) {
                if e[12] == 0 {
                    return Ok(false);
                }
                if map.len() >= MAX_SPARSE_CHUNKS {
                    return Err(bad(format!(
                        "its sparse map has more than the {MAX_SPARSE_CHUNKS} chunks allowed"
                    )));
                }
                map.push(Chunk {
                    offset: num(&e[..12], "offset")?,
                    len: num(&e[12..], "size")?,
                });
            }
            Ok(true)
        };
        let mut map = Vec::new();
        take(&h[386..482], &mut map)?;
        let size = num(&h[483..495], "real size")?;
        let mut extended = h[482] != 0;
        let mut ext = [0u8; BLOCK];
        while extended {
            self.fill(&mut ext, name, at)?;
            take(&ext[..504], &mut map)?;
            extended = ext[504] != 0;
        }
        Ok((map, size))
    }

    /// A PAX 1.0 sparse map, at the start of the entry's data: decimal numbers, one a line (the
    /// count, then each chunk's offset and size), padded to a block. Returns the map and the
    /// bytes it took.
    fn sparse_map_1_0(
        &mut self,
        stored: u64,
        name: &str,
        at: u64,
    ) -> Result<(Vec<Chunk>, u64), Error> {
        let bad = |what: &str| malformed(name, at, format!("its sparse map {what}"));
        let mut used = 0u64;
        let mut block = [0u8; BLOCK];
        let mut in_block = BLOCK;
        let mut next_number = |reader: &mut Self| -> Result<u64, Error> {
            let mut n: u64 = 0;
            let mut digits = 0;
            loop {
                if in_block == BLOCK {
                    if used + BLOCK as u64 > stored {
                        return Err(bad("runs past the entry's data"));
                    }
                    reader.fill(&mut block, name, at)?;
                    used += BLOCK as u64;
                    in_block = 0;
                }
                let b = block[in_block];
                in_block += 1;
                match b {
                    b'0'..=b'9' => {
                        n = n
                            .checked_mul(10)
                            .and_then(|n| n.checked_add(u64::from(b - b'0')))
                            .ok_or_else(|| bad("has a number out of range"))?;
                        digits += 1;
                    }
                    b'\n' if digits > 0 => return Ok(n),
                    _ => return Err(bad("is not a list of numbers")),
                }
            }
        };
        let count = next_number(self)?;
        if count > MAX_SPARSE_CHUNKS as u64 {
            return Err(bad(&format!(
                "has {count} chunks, more than the {MAX_SPARSE_CHUNKS} allowed"
            )));
        }
        let mut map = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let offset = next_number(self)?;
            let len = next_number(self)?;
            map.push(Chunk { offset, len });
        }
        Ok((map, used))
    }

    /// Reads the current file's stored bytes: `Some((offset, n))` says `buf[..n]` belongs at
    /// `offset` in the file; `None` at the end of its data.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<Option<(u64, usize)>, Error> {
        if !self.data.next_chunk() {
            return Ok(None);
        }
        let d = &mut self.data;
        let want = d.chunk_left.min(buf.len() as u64) as usize;
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(malformed(
                        &d.entry,
                        d.at,
                        "the archive ends in the middle of its data",
                    ))
                }
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        };
        let offset = d.offset;
        self.took(n as u64);
        Ok(Some((offset, n)))
    }

    /// Counts `n` bytes of the current file's data as read.
    fn took(&mut self, n: u64) {
        let d = &mut self.data;
        d.offset += n;
        d.chunk_left -= n;
        d.left -= n;
        self.pos += n;
    }
}

impl<R: BufRead> Reader<R> {
    /// Like [`Reader::read_data`], without the copy: the current file's next stored bytes as
    /// the input holds them, and the offset in the file they belong at; `None` at the end of
    /// its data. The caller takes some with [`Reader::consume_data`] before it asks again.
    pub fn peek_data(&mut self) -> Result<Option<(u64, &[u8])>, Error> {
        if !self.data.next_chunk() {
            return Ok(None);
        }
        let d = &self.data;
        // Filled first, then borrowed: the input's buffer then holds what the second call
        // returns at once.
        loop {
            match self.inner.fill_buf() {
                Ok([]) => {
                    return Err(malformed(
                        &d.entry,
                        d.at,
                        "the archive ends in the middle of its data",
                    ))
                }
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
        let held = self.inner.fill_buf().map_err(Error::Io)?;
        let n = held
            .len()
            .min(usize::try_from(d.chunk_left).unwrap_or(usize::MAX));
        Ok(Some((d.offset, &held[..n])))
    }

    /// Takes `n` of the bytes [`Reader::peek_data`] returned (at most that many).
    pub fn consume_data(&mut self, n: usize) {
        let n = (n as u64).min(self.data.chunk_left);
        self.inner.consume(n as usize);
        self.took(n);
    }
}

/// Entries that GNU tar reads as a header alone, whatever their size field says: hard links,
/// symlinks, devices, FIFOs and directories (a regular type whose name ends in `/` is an old
/// V7 directory).
fn header_only(typeflag: u8, path: &[u8]) -> bool {
    match typeflag {
        b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => true,
        b'0' | 0 | b'7' => path.ends_with(b"/"),
        _ => false,
    }
}

/// A numeric field of the header `h`, or the error `bad` makes of it.
fn field(
    h: &[u8; BLOCK],
    range: std::ops::Range<usize>,
    what: &str,
    bad: &dyn Fn(String) -> Error,
) -> Result<i64, Error> {
    number(&h[range.clone()]).ok_or_else(|| {
        bad(format!(
            "its {what} field is not a number ({})",
            String::from_utf8_lossy(&h[range]).escape_debug()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_gnu_tar_reads_them() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"0000644 "), Some(0o644));
        assert_eq!(number(b"\0\0\0\0\0\0\0\0"), Some(0), "all NULs");
        assert_eq!(number(b"\x000001750"), Some(1000), "a leading NUL");
        assert_eq!(
            number(b" 12345670123"),
            Some(0o12345670123),
            "blanks, no end"
        );
        assert_eq!(number(b"777777777777"), Some(0o777777777777));
        assert_eq!(number(b"        "), None, "blanks only");
        assert_eq!(number(b"0000x44\0"), None);
        assert_eq!(number(b"00 0644\0"), Some(0), "a blank ends the digits");
        let mut pos = [0u8; 12];
        pos[0] = 0x80;
        pos[11] = 1;
        assert_eq!(number(&pos), Some(1));
        assert_eq!(number(&[0xff; 12]), Some(-1));
        let mut neg = [0xff; 12];
        neg[11] = 0xfe;
        assert_eq!(number(&neg), Some(-2));
        let mut huge = [0xff; 12];
        huge[0] = 0x80;
        assert_eq!(number(&huge), None, "past an i64");
        assert_eq!(
            number(&[0x81; 12]),
            None,
            "only 0x80 and 0xff start base-256"
        );
    }

    #[test]
    fn pax_times_round_towards_minus_infinity() {
        assert_eq!(pax_time(b"5"), Some((5, 0)));
        assert_eq!(pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(pax_time(b"-0.5"), Some((-1, 500_000_000)));
        assert_eq!(pax_time(b"-3"), Some((-3, 0)));
        assert_eq!(
            pax_time(b"1234567890.987654321123"),
            Some((1234567890, 987654321))
        );
        assert_eq!(pax_time(b"-1.0000000001"), Some((-2, 999_999_999)));
        for bad in [
            &b"1."[..],
            b".5",
            b"abc",
            b"",
            b"1.5x",
            b"--1",
            b"99999999999999999999",
        ] {
            assert_eq!(pax_time(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    fn record(k: &str, v: &[u8]) -> Vec<u8> {
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while format!("{len}").len() + rest != len {
            len += 1;
        }
        let mut r = format!("{len} {k}=").into_bytes();
        r.extend_from_slice(v);
        r.push(b'\n');
        r
    }

    #[test]
    fn pax_records_are_read_by_length() {
        let mut data = record("SCHILY.xattr.user.nl", b"a\nb=c\n");
        data.extend(record("path", b"x"));
        data.extend(b"\0\0\0");
        let r = pax_records(&data).unwrap();
        assert_eq!(
            r,
            vec![
                (b"SCHILY.xattr.user.nl".to_vec(), b"a\nb=c\n".to_vec()),
                (b"path".to_vec(), b"x".to_vec())
            ]
        );
        assert_eq!(
            pax_records(b"  11 a=bcd\n").unwrap().len(),
            1,
            "leading blanks count"
        );
        for bad in [
            &b"x path=a\n"[..],
            b"99 path=a\n",
            b"9 patha\n\n\n",
            b"9 path=ab",
            b"10path=ab\n",
            b"0 \n",
        ] {
            assert!(
                pax_records(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// A header (ustar, or GNU with `gnu`) with a right checksum.
    fn header(name: &str, typeflag: u8, size: u64, gnu: bool) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000001\0");
        h[156] = typeflag;
        h[257..265].copy_from_slice(if gnu { b"ustar  \0" } else { b"ustar\x0000" });
        checksum(&mut h);
        h
    }

    fn checksum(h: &mut [u8; BLOCK]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    fn padded(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
        v
    }

    /// Every entry of `tar` with its data as (offset, bytes) runs.
    type Runs = Vec<(u64, Vec<u8>)>;

    /// Every entry and its data runs, read with `read_data`; the same read again through
    /// `peek_data` (from a small buffer, so runs split at odd places) must find the same bytes
    /// at the same offsets, or the same error.
    fn read_all(tar: &[u8]) -> Result<Vec<(Entry, Runs)>, Error> {
        let copied = read_with(tar, false);
        let peeked = read_with(tar, true);
        match (&copied, &peeked) {
            (Ok(a), Ok(b)) => {
                let flat = |v: &Vec<(Entry, Runs)>| -> Vec<(Vec<u8>, Runs)> {
                    v.iter().map(|(e, r)| (e.path.clone(), joined(r))).collect()
                };
                assert_eq!(flat(a), flat(b));
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("read_data and peek_data disagree"),
        }
        copied
    }

    fn read_with(tar: &[u8], peek: bool) -> Result<Vec<(Entry, Runs)>, Error> {
        let mut r = Reader::new(io::BufReader::with_capacity(333, tar));
        let mut out = Vec::new();
        let mut buf = [0u8; 700];
        while let Some(e) = r.next_entry()? {
            let mut data = Vec::new();
            if e.kind == Kind::File {
                if peek {
                    while let Some((off, held)) = r.peek_data()? {
                        let n = held.len().min(500);
                        data.push((off, held[..n].to_vec()));
                        r.consume_data(n);
                    }
                } else {
                    while let Some((off, n)) = r.read_data(&mut buf)? {
                        data.push((off, buf[..n].to_vec()));
                    }
                }
            }
            out.push((e, data));
        }
        Ok(out)
    }

    /// Runs that follow one another, as one.
    fn joined(runs: &Runs) -> Runs {
        let mut out: Runs = Vec::new();
        for (off, bytes) in runs {
            match out.last_mut() {
                Some((o, b)) if *o + b.len() as u64 == *off => b.extend_from_slice(bytes),
                _ => out.push((*off, bytes.clone())),
            }
        }
        out
    }

    #[test]
    fn links_and_directories_are_headers_alone_whatever_their_size() {
        let mut tar = Vec::new();
        tar.extend(header("f", b'0', 3, false));
        tar.extend(padded(b"abc"));
        tar.extend(header("h", b'1', 3, false));
        tar.extend(header("d/", b'5', 700, false));
        tar.extend(header("old/", 0, 3, false));
        tar.extend(header("g", b'0', 1, false));
        tar.extend(padded(b"g"));
        let entries = read_all(&tar).unwrap();
        let names: Vec<(&[u8], Kind)> =
            entries.iter().map(|(e, _)| (&e.path[..], e.kind)).collect();
        assert_eq!(
            names,
            vec![
                (&b"f"[..], Kind::File),
                (b"h", Kind::HardLink),
                (b"d/", Kind::Dir),
                (b"old/", Kind::Dir),
                (b"g", Kind::File)
            ]
        );
        assert_eq!(entries[4].1, vec![(0, b"g".to_vec())]);
    }

    #[test]
    fn extended_headers_apply_to_the_next_entry_and_globals_to_all() {
        let mut tar = Vec::new();
        let g = record("uid", b"7");
        tar.extend(header("pax_global_header", b'g', g.len() as u64, false));
        tar.extend(padded(&g));
        tar.extend(header("VOL", b'V', 0, true));
        let mut x = record("path", b"long\nname");
        x.extend(record("mtime", b"-1.5"));
        x.extend(record("SCHILY.xattr.user.a", b"1"));
        tar.extend(header("PaxHeaders/x", b'X', x.len() as u64, false));
        tar.extend(padded(&x));
        tar.extend(header("short", b'0', 0, false));
        let l = b"a-long-gnu-name\0";
        tar.extend(header("././@LongLink", b'L', l.len() as u64, true));
        tar.extend(padded(l));
        tar.extend(header("cut", b'D', 5, true));
        tar.extend(padded(b"Yabc\0"));
        let entries = read_all(&tar).unwrap();
        assert_eq!(entries.len(), 2, "the label is no entry");
        let (a, b) = (&entries[0].0, &entries[1].0);
        assert_eq!(a.path, b"long\nname");
        assert_eq!((a.mtime, a.mtime_nanos), (-2, 500_000_000));
        assert_eq!(a.xattrs, vec![(b"user.a".to_vec(), b"1".to_vec())]);
        assert_eq!((a.uid, b.uid), (7, 7), "the global uid applies to both");
        assert_eq!(b.path, b"a-long-gnu-name");
        assert_eq!(b.kind, Kind::Dir, "a dumpdir is a directory");
    }

    #[test]
    fn old_gnu_sparse_with_extension_blocks() {
        // Six chunks: four in the header, two in one extension block.
        let chunks: Vec<(u64, u64)> = (0..6).map(|i| (i * 1000, 10)).collect();
        let mut h = header("sp", b'S', 60, true);
        for (i, (o, n)) in chunks.iter().take(4).enumerate() {
            let e = 386 + i * 24;
            h[e..e + 12].copy_from_slice(format!("{o:011o}\0").as_bytes());
            h[e + 12..e + 24].copy_from_slice(format!("{n:011o}\0").as_bytes());
        }
        h[482] = 1;
        h[483..495].copy_from_slice(format!("{:011o}\0", 9000).as_bytes());
        checksum(&mut h);
        let mut ext = [0u8; BLOCK];
        for (i, (o, n)) in chunks.iter().skip(4).enumerate() {
            let e = i * 24;
            ext[e..e + 12].copy_from_slice(format!("{o:011o}\0").as_bytes());
            ext[e + 12..e + 24].copy_from_slice(format!("{n:011o}\0").as_bytes());
        }
        let mut tar = h.to_vec();
        tar.extend(ext);
        tar.extend(padded(&[b'x'; 60]));
        let entries = read_all(&tar).unwrap();
        let (e, data) = &entries[0];
        assert_eq!(e.size, 9000);
        let offsets: Vec<u64> = data.iter().map(|d| d.0).collect();
        assert_eq!(offsets, vec![0, 1000, 2000, 3000, 4000, 5000]);
        // The same map past the real size is refused.
        let mut short = tar.clone();
        short[483..495].copy_from_slice(format!("{:011o}\0", 4000).as_bytes());
        let mut hb = [0u8; BLOCK];
        hb.copy_from_slice(&short[..BLOCK]);
        checksum(&mut hb);
        short[..BLOCK].copy_from_slice(&hb);
        let err = read_all(&short).unwrap_err().to_string();
        assert!(err.contains("sparse map") && err.contains("`sp`"), "{err}");
    }

    #[test]
    fn pax_sparse_1_0_reads_its_map_from_the_data() {
        let mut x = record("GNU.sparse.major", b"1");
        x.extend(record("GNU.sparse.minor", b"0"));
        x.extend(record("GNU.sparse.name", b"real"));
        x.extend(record("GNU.sparse.realsize", b"100000"));
        let map = padded(b"2\n0\n3\n99990\n2\n");
        let stored = map.len() as u64 + 5;
        let mut tar = header("PaxHeaders/x", b'x', x.len() as u64, false).to_vec();
        tar.extend(padded(&x));
        tar.extend(header("GNUSparseFile.0/real", b'0', stored, false));
        let mut data = map.clone();
        data.extend(b"abcde");
        tar.extend(padded(&data));
        let entries = read_all(&tar).unwrap();
        let (e, d) = &entries[0];
        assert_eq!(e.path, b"real");
        assert_eq!(e.size, 100000);
        assert_eq!(d, &vec![(0, b"abc".to_vec()), (99990, b"de".to_vec())]);
    }

    #[test]
    fn malformed_archives_name_the_entry_and_what_is_wrong() {
        let mut bad_sum = header("f", b'0', 0, false);
        bad_sum[0] = b'g';
        let mut cut = header("f", b'0', 10, false).to_vec();
        cut.extend(b"abc");
        let mut big = header("x", b'x', MAX_EXTENDED + 1, false).to_vec();
        big.extend(vec![0u8; 1024]);
        // Only the last PAX header before an entry is read (as GNU tar reads them).
        let mut last_bad = Vec::new();
        for data in [record("path", b"first"), b"9 patha\n\n\n".to_vec()] {
            last_bad.extend(header("x", b'x', data.len() as u64, false));
            last_bad.extend(padded(&data));
        }
        last_bad.extend(header("f", b'0', 0, false));
        let mut first_bad = last_bad.clone();
        first_bad.truncate(0);
        for data in [b"9 patha\n\n\n".to_vec(), record("path", b"second")] {
            first_bad.extend(header("x", b'x', data.len() as u64, false));
            first_bad.extend(padded(&data));
        }
        first_bad.extend(header("f", b'0', 0, false));
        assert_eq!(read_all(&first_bad).unwrap()[0].0.path, b"second");
        let mut disagree = record("size", b"5").to_vec();
        let mut d = header("x", b'x', disagree.len() as u64, false).to_vec();
        d.extend(padded(&disagree));
        d.extend(header("f", b'0', 10, false));
        d.extend(padded(b"0123456789"));
        disagree = d;
        for (tar, want) in [
            (
                bad_sum.to_vec(),
                "`g` (header at byte 0): its header checksum is wrong",
            ),
            (
                cut,
                "`f` (header at byte 0): the archive ends in the middle of its data",
            ),
            (big, "holds 1048577 bytes, more than the 1048576 allowed"),
            (last_bad, "`x` (header at byte 1024): malformed PAX header"),
            (
                disagree,
                "its PAX size (5) disagrees with its header size (10)",
            ),
        ] {
            let err = read_all(&tar).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should say {want}");
        }
    }
}
