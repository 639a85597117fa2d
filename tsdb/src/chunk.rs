//! Compressed chunks of samples.
//!
//! Timestamps are delta-of-delta coded with adaptive widths. Values are chosen per chunk: when
//! every value is an integer or a short decimal (`n / 10^e` reproduces the exact bits), the
//! scaled integers are delta-of-delta coded the same way — cgroup counters and byte gauges are
//! integers, and this beats Gorilla's XOR by a wide margin; otherwise Gorilla XOR. Every `f64`
//! round-trips bit-exactly (NaN payloads such as the staleness marker, ±Inf, -0.0): a value the
//! integer coding cannot reproduce moves the chunk to XOR.
//!
//! Written here rather than taken from a crate: the crates we found implement plain Gorilla
//! only, without the integer/decimal mode or a seekable iterator over borrowed bytes.
//!
//! A closed chunk is sealed ([`Chunk::sealed`], [`seal`]): integer chunks are then stored
//! bit-packed with one width per chunk and stream ([`packed`]), which needs every sample
//! known; the appendable coding above is what the head's open chunk uses.
//!
//! Serialized layout: `encoding u8, exponent u8, count u16 LE, body`; the body is the bit
//! stream of the appendable codings, or a sealed integer chunk's (see [`packed`]).

mod bits;
mod packed;

use bits::{BitReader, BitWriter, read_int, write_int};
use packed::Packed;

use crate::storage::Sample;

/// Samples per chunk before a new one is cut (as Prometheus).
pub const SAMPLES_PER_CHUNK: u16 = 120;

/// The largest decimal exponent of the integer coding.
const MAX_EXP: u8 = 6;
const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];
const HEADER: usize = 4;
const ENC_INT: u8 = 0;
const ENC_XOR: u8 = 1;
const ENC_PACKED: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk is truncated or has an unknown encoding")]
    Malformed,
}

/// How a chunk codes values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueEncoding {
    /// Integers `n` with values `n / 10^exp`.
    Int { exp: u8 },
    /// Gorilla XOR.
    Xor,
}

/// How a serialized chunk is coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// Appendable integers (delta-of-delta, adaptive widths).
    Int {
        exp: u8,
    },
    Xor,
    /// Sealed integers, bit-packed per chunk.
    Packed {
        exp: u8,
    },
}

impl From<ValueEncoding> for Format {
    fn from(e: ValueEncoding) -> Format {
        match e {
            ValueEncoding::Int { exp } => Format::Int { exp },
            ValueEncoding::Xor => Format::Xor,
        }
    }
}

/// The scaled integer of `v` at exponent `e`, when it reproduces `v` bit for bit.
fn scaled(v: f64, e: u8) -> Option<i64> {
    let s = POW10[usize::from(e)];
    let n = (v * s).round();
    if n.is_nan() || n.abs() >= 9.0e15 {
        return None;
    }
    let i = n as i64;
    ((i as f64 / s).to_bits() == v.to_bits()).then_some(i)
}

/// The smallest exponent at which `v` is representable.
fn min_exp(v: f64) -> Option<u8> {
    (0..=MAX_EXP).find(|e| scaled(v, *e).is_some())
}

/// Encoder state for the next append.
#[derive(Clone, Copy, Debug, Default)]
struct State {
    t: i64,
    t_delta: i64,
    t_width: u32,
    /// Integer coding: last scaled value and delta.
    n: i64,
    n_delta: i64,
    n_width: u32,
    /// XOR coding: last value bits and the leading/trailing zero window.
    x: u64,
    lead: u32,
    trail: u32,
    /// Whether `lead`/`trail` hold a window.
    window: bool,
}

/// An appendable compressed chunk.
#[derive(Clone, Debug)]
pub struct Chunk {
    enc: ValueEncoding,
    bits: BitWriter,
    count: u16,
    min_t: i64,
    max_t: i64,
    st: State,
}

impl Default for Chunk {
    fn default() -> Chunk {
        Chunk::new(ValueEncoding::Int { exp: 0 })
    }
}

impl Chunk {
    pub fn new(enc: ValueEncoding) -> Chunk {
        Chunk {
            enc,
            bits: BitWriter::default(),
            count: 0,
            min_t: i64::MAX,
            max_t: i64::MIN,
            st: State::default(),
        }
    }

    /// A chunk of `samples` (in time order), with the tightest value coding.
    pub fn from_samples(samples: &[Sample]) -> Chunk {
        let enc = choose(samples.iter().map(|s| s.v), ValueEncoding::Int { exp: 0 });
        let mut c = Chunk::new(enc);
        for s in samples {
            c.push(s.t, s.v);
        }
        c
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count >= SAMPLES_PER_CHUNK
    }

    pub fn min_time(&self) -> i64 {
        self.min_t
    }

    pub fn max_time(&self) -> i64 {
        self.max_t
    }

    pub fn encoding(&self) -> ValueEncoding {
        self.enc
    }

    /// Bytes of the serialized chunk.
    pub fn size(&self) -> usize {
        HEADER + self.bits.bytes().len()
    }

    /// Appends a sample newer than the last one (the caller orders samples). A value the
    /// current coding cannot represent re-encodes the chunk (at most [`SAMPLES_PER_CHUNK`]).
    pub fn append(&mut self, t: i64, v: f64) {
        if let ValueEncoding::Int { exp } = self.enc
            && scaled(v, exp).is_none()
        {
            let enc = choose(self.iter().map(|s| s.v).chain([v]), self.enc);
            let mut c = Chunk::new(enc);
            for s in self.iter() {
                c.push(s.t, s.v);
            }
            *self = c;
        }
        self.push(t, v);
    }

    /// Appends with the current coding, which must represent `v`.
    fn push(&mut self, t: i64, v: f64) {
        let st = &mut self.st;
        let w = &mut self.bits;
        match self.count {
            0 => w.bits(t as u64, 64),
            1 => {
                st.t_delta = t.wrapping_sub(st.t);
                write_int(w, st.t_delta, &mut st.t_width);
            }
            _ => {
                let d = t.wrapping_sub(st.t);
                write_int(w, d.wrapping_sub(st.t_delta), &mut st.t_width);
                st.t_delta = d;
            }
        }
        st.t = t;
        match self.enc {
            ValueEncoding::Int { exp } => {
                let n = scaled(v, exp).unwrap_or_default();
                match self.count {
                    0 => w.bits(n as u64, 64),
                    1 => {
                        st.n_delta = n.wrapping_sub(st.n);
                        write_int(w, st.n_delta, &mut st.n_width);
                    }
                    _ => {
                        let d = n.wrapping_sub(st.n);
                        write_int(w, d.wrapping_sub(st.n_delta), &mut st.n_width);
                        st.n_delta = d;
                    }
                }
                st.n = n;
            }
            ValueEncoding::Xor => {
                let x = v.to_bits();
                if self.count == 0 {
                    w.bits(x, 64);
                } else {
                    xor_write(w, st, x);
                }
                st.x = x;
            }
        }
        self.count += 1;
        self.min_t = self.min_t.min(t);
        self.max_t = self.max_t.max(t);
    }

    /// The serialized chunk.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        match self.enc {
            ValueEncoding::Int { exp } => out.extend([ENC_INT, exp]),
            ValueEncoding::Xor => out.extend([ENC_XOR, 0]),
        }
        out.extend(self.count.to_le_bytes());
        out.extend(self.bits.bytes());
        out
    }

    /// The sealed serialized chunk (for a chunk that is closed): integer chunks bit-packed
    /// unless outliers make that larger than the appendable coding, XOR chunks as they are.
    /// Readable by [`ChunkRef`]; [`Chunk::from_bytes`] makes it appendable again.
    pub fn sealed(&self) -> Vec<u8> {
        match self.enc {
            ValueEncoding::Int { exp } => {
                let mut samples = Vec::with_capacity(self.len());
                self.iter().decode_into(i64::MIN, i64::MAX, &mut samples);
                let ts: Vec<i64> = samples.iter().map(|s| s.t).collect();
                let ns: Vec<i64> = samples
                    .iter()
                    .map(|s| scaled(s.v, exp).unwrap_or_default())
                    .collect();
                let packed = sealed_ints(exp, &ts, &ns);
                if packed.len() <= self.size() {
                    packed
                } else {
                    self.to_bytes()
                }
            }
            ValueEncoding::Xor => self.to_bytes(),
        }
    }

    /// Rebuilds an appendable chunk from its serialized form (sealed or not), checking that
    /// it decodes.
    pub fn from_bytes(b: &[u8]) -> Result<Chunk, ChunkError> {
        let view = ChunkRef::new(b)?;
        let samples: Vec<Sample> = view.iter().collect();
        if samples.len() != view.len() {
            return Err(ChunkError::Malformed);
        }
        let mut c = Chunk::new(match view.fmt {
            Format::Int { exp } | Format::Packed { exp } => ValueEncoding::Int { exp },
            Format::Xor => ValueEncoding::Xor,
        });
        for s in &samples {
            c.push(s.t, s.v);
        }
        Ok(c)
    }

    /// Iterates the samples without materialising them.
    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter::new(
            self.enc.into(),
            self.count,
            self.bits.bytes(),
            Packed::default(),
        )
    }
}

/// The sealed serialized chunk of `samples` (in time order, at most `u16::MAX`), with the
/// tightest value coding: what closed chunks and blocks store.
pub fn seal(samples: &[Sample]) -> Vec<u8> {
    Chunk::from_samples(samples).sealed()
}

fn sealed_ints(exp: u8, ts: &[i64], ns: &[i64]) -> Vec<u8> {
    let count = u16::try_from(ts.len()).unwrap_or(u16::MAX);
    let n = usize::from(count);
    let mut out = Vec::with_capacity(16 + n * 3);
    out.extend([ENC_PACKED, exp]);
    out.extend(count.to_le_bytes());
    packed::encode(&ts[..n], &ns[..n], &mut out);
    out
}

/// The coding for `values` preferring at least `from`'s exponent.
fn choose(values: impl Iterator<Item = f64>, from: ValueEncoding) -> ValueEncoding {
    let mut exp = match from {
        ValueEncoding::Int { exp } => exp,
        ValueEncoding::Xor => return ValueEncoding::Xor,
    };
    let values: Vec<f64> = values.collect();
    for v in &values {
        match min_exp(*v) {
            Some(e) => exp = exp.max(e),
            None => return ValueEncoding::Xor,
        }
    }
    // A value exact at a smaller exponent may not be at the chosen one.
    if values.iter().all(|v| scaled(*v, exp).is_some()) {
        ValueEncoding::Int { exp }
    } else {
        ValueEncoding::Xor
    }
}

fn xor_write(w: &mut BitWriter, st: &mut State, x: u64) {
    let d = x ^ st.x;
    if d == 0 {
        w.bit(false);
        return;
    }
    w.bit(true);
    let lead = d.leading_zeros().min(31);
    let trail = d.trailing_zeros();
    if st.window && lead >= st.lead && trail >= st.trail {
        w.bit(false);
        w.bits(d >> st.trail, 64 - st.lead - st.trail);
    } else {
        w.bit(true);
        let sig = 64 - lead - trail;
        w.bits(u64::from(lead), 5);
        // 64 significant bits are written as 0.
        w.bits(u64::from(sig & 63), 6);
        w.bits(d >> trail, sig);
        st.lead = lead;
        st.trail = trail;
        st.window = true;
    }
}

/// A read-only view of a serialized chunk.
#[derive(Clone, Copy, Debug)]
pub struct ChunkRef<'a> {
    fmt: Format,
    count: u16,
    bits: &'a [u8],
    pk: Packed,
}

impl<'a> ChunkRef<'a> {
    pub fn new(b: &'a [u8]) -> Result<ChunkRef<'a>, ChunkError> {
        if b.len() < HEADER {
            return Err(ChunkError::Malformed);
        }
        let count = u16::from_le_bytes([b[2], b[3]]);
        let (fmt, bits, pk) = match (b[0], b[1]) {
            (ENC_INT, e) if e <= MAX_EXP => {
                (Format::Int { exp: e }, &b[HEADER..], Packed::default())
            }
            (ENC_XOR, _) => (Format::Xor, &b[HEADER..], Packed::default()),
            (ENC_PACKED, e) if e <= MAX_EXP => {
                let (pk, bits) =
                    packed::decode_header(&b[HEADER..], count).ok_or(ChunkError::Malformed)?;
                (Format::Packed { exp: e }, bits, pk)
            }
            _ => return Err(ChunkError::Malformed),
        };
        Ok(ChunkRef {
            fmt,
            count,
            bits,
            pk,
        })
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> ChunkIter<'a> {
        ChunkIter::new(self.fmt, self.count, self.bits, self.pk)
    }
}

/// Decodes a chunk sample by sample; stops early (yields fewer samples) on corrupt bytes.
#[derive(Clone, Debug)]
pub struct ChunkIter<'a> {
    fmt: Format,
    r: BitReader<'a>,
    left: u16,
    read: u16,
    st: State,
    pk: Packed,
}

impl<'a> ChunkIter<'a> {
    fn new(fmt: Format, count: u16, bits: &'a [u8], pk: Packed) -> ChunkIter<'a> {
        ChunkIter {
            fmt,
            r: BitReader::new(bits),
            left: count,
            read: 0,
            st: State::default(),
            pk,
        }
    }

    /// Appends the remaining samples within `[mint, maxt]` to `out` (a plain loop: the
    /// query path's hottest).
    pub fn decode_into(&mut self, mint: i64, maxt: i64, out: &mut Vec<Sample>) {
        loop {
            // Past the first two samples an integer chunk is two delta-of-deltas per sample:
            // a dedicated loop without the per-sample dispatch of `decode`.
            match self.fmt {
                Format::Int { exp } if self.read >= 2 => {
                    return self.decode_ints_into(exp, mint, maxt, out);
                }
                Format::Packed { exp } if self.read >= 1 => {
                    return self.decode_packed_into(exp, mint, maxt, out);
                }
                _ => {}
            }
            let Some(s) = self.next() else {
                return;
            };
            if s.t > maxt {
                return;
            }
            if s.t >= mint {
                out.push(s);
            }
        }
    }

    /// [`ChunkIter::decode_into`] for an integer chunk past its first two samples.
    fn decode_ints_into(&mut self, exp: u8, mint: i64, maxt: i64, out: &mut Vec<Sample>) {
        let div = POW10[usize::from(exp)];
        let st = &mut self.st;
        let r = &mut self.r;
        while self.left > 0 {
            let (Some(tdod), Some(ndod)) =
                (read_int(r, &mut st.t_width), read_int(r, &mut st.n_width))
            else {
                self.left = 0;
                return;
            };
            self.left -= 1;
            self.read = self.read.saturating_add(1);
            st.t_delta = st.t_delta.wrapping_add(tdod);
            st.t = st.t.wrapping_add(st.t_delta);
            st.n_delta = st.n_delta.wrapping_add(ndod);
            st.n = st.n.wrapping_add(st.n_delta);
            if st.t > maxt {
                return;
            }
            if st.t >= mint {
                out.push(Sample {
                    t: st.t,
                    v: st.n as f64 / div,
                });
            }
        }
    }

    /// [`ChunkIter::decode_into`] for a sealed integer chunk past its first sample.
    fn decode_packed_into(&mut self, exp: u8, mint: i64, maxt: i64, out: &mut Vec<Sample>) {
        let div = POW10[usize::from(exp)];
        let pk = self.pk;
        let st = &mut self.st;
        let r = &mut self.r;
        while self.left > 0 {
            let Some((pt, pv)) = packed::read_pair(r, &pk) else {
                self.left = 0;
                return;
            };
            self.left -= 1;
            self.read = self.read.saturating_add(1);
            st.t = st.t.wrapping_add(pk.t.delta(pt));
            st.n = st.n.wrapping_add(pk.v.delta(pv));
            if st.t > maxt {
                return;
            }
            if st.t >= mint {
                out.push(Sample {
                    t: st.t,
                    v: st.n as f64 / div,
                });
            }
        }
    }

    /// The first sample at or after `t`, skipping earlier ones.
    pub fn seek(&mut self, t: i64) -> Option<Sample> {
        loop {
            let s = self.next()?;
            if s.t >= t {
                return Some(s);
            }
        }
    }

    fn decode(&mut self) -> Option<Sample> {
        let st = &mut self.st;
        let r = &mut self.r;
        if let Format::Packed { exp } = self.fmt {
            let pk = &self.pk;
            if self.read == 0 {
                st.t = pk.t0;
                st.n = pk.n0;
            } else {
                let (pt, pv) = packed::read_pair(r, pk)?;
                st.t = st.t.wrapping_add(pk.t.delta(pt));
                st.n = st.n.wrapping_add(pk.v.delta(pv));
            }
            self.read = self.read.saturating_add(1);
            return Some(Sample {
                t: st.t,
                v: st.n as f64 / POW10[usize::from(exp)],
            });
        }
        let t = match self.read {
            0 => r.bits(64)? as i64,
            1 => {
                st.t_delta = read_int(r, &mut st.t_width)?;
                st.t.wrapping_add(st.t_delta)
            }
            _ => {
                let dod = read_int(r, &mut st.t_width)?;
                st.t_delta = st.t_delta.wrapping_add(dod);
                st.t.wrapping_add(st.t_delta)
            }
        };
        st.t = t;
        let v = match self.fmt {
            Format::Int { exp } | Format::Packed { exp } => {
                let n = match self.read {
                    0 => r.bits(64)? as i64,
                    1 => {
                        st.n_delta = read_int(r, &mut st.n_width)?;
                        st.n.wrapping_add(st.n_delta)
                    }
                    _ => {
                        let dod = read_int(r, &mut st.n_width)?;
                        st.n_delta = st.n_delta.wrapping_add(dod);
                        st.n.wrapping_add(st.n_delta)
                    }
                };
                st.n = n;
                n as f64 / POW10[usize::from(exp)]
            }
            Format::Xor => {
                let x = if self.read == 0 {
                    r.bits(64)?
                } else if !r.bit()? {
                    st.x
                } else {
                    if r.bit()? {
                        st.lead = r.bits(5)? as u32;
                        let mut sig = r.bits(6)? as u32;
                        if sig == 0 {
                            sig = 64;
                        }
                        st.trail = 64u32.checked_sub(st.lead + sig)?;
                        st.window = true;
                    } else if !st.window {
                        return None;
                    }
                    let sig = 64 - st.lead - st.trail;
                    st.x ^ (r.bits(sig)? << st.trail)
                };
                st.x = x;
                f64::from_bits(x)
            }
        };
        self.read += 1;
        Some(Sample { t, v })
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.left == 0 {
            return None;
        }
        match self.decode() {
            Some(s) => {
                self.left -= 1;
                Some(s)
            }
            None => {
                self.left = 0;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
