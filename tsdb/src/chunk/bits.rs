//! A big-endian bit stream: the container of the chunk encodings.

/// Appends bits most significant first.
#[derive(Clone, Debug, Default)]
pub(crate) struct BitWriter {
    buf: Vec<u8>,
    /// Unused low bits of the last byte.
    free: u32,
}

impl BitWriter {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn bit(&mut self, b: bool) {
        self.bits(u64::from(b), 1);
    }

    /// Writes the low `n` bits of `v` (`n <= 64`).
    pub(crate) fn bits(&mut self, v: u64, n: u32) {
        let mut n = n;
        while n > 0 {
            if self.free == 0 {
                if self.buf.len() == self.buf.capacity() {
                    // Grow by a quarter, not double: an open chunk lives in memory for its
                    // series' whole chunk span, and doubling can leave up to half of its
                    // buffer unused.
                    self.buf.reserve_exact((self.buf.len() / 4).max(16));
                }
                self.buf.push(0);
                self.free = 8;
            }
            let take = n.min(self.free);
            let shift = n - take;
            let bits = ((v >> shift) & ((1u64 << take) - 1)) as u8;
            if let Some(last) = self.buf.last_mut() {
                *last |= bits << (self.free - take);
            }
            self.free -= take;
            n -= take;
        }
    }
}

/// Reads what a [`BitWriter`] wrote; `None` past the end.
#[derive(Clone, Debug)]
pub(crate) struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> BitReader<'a> {
        BitReader { buf, pos: 0 }
    }

    pub(crate) fn bit(&mut self) -> Option<bool> {
        let byte = *self.buf.get(self.pos / 8)?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(b == 1)
    }

    /// The next bits, most significant first, from one 8-byte load: at least 57 of the 64 are
    /// the stream's (the rest are zero); `None` near the end of the buffer.
    pub(crate) fn peek(&self) -> Option<u64> {
        let at = self.pos / 8;
        let word = self.buf.get(at..at + 8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        Some(u64::from_be_bytes(w) << (self.pos % 8))
    }

    /// Skips `n` bits that [`BitReader::peek`] showed.
    pub(crate) fn skip(&mut self, n: u32) {
        self.pos += n as usize;
    }

    /// Reads `n <= 64` bits.
    pub(crate) fn bits(&mut self, n: u32) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        // Fast path: one big-endian load of the 8 bytes holding the bits (at most 7 + 56 of
        // them), when the buffer has them.
        let at = self.pos / 8;
        if n <= 56
            && let Some(word) = self.buf.get(at..at + 8)
        {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            let v = (u64::from_be_bytes(w) << (self.pos % 8)) >> (64 - n);
            self.pos += n as usize;
            return Some(v);
        }
        let mut out = 0u64;
        let mut n = n;
        while n > 0 {
            let byte = *self.buf.get(self.pos / 8)?;
            let avail = 8 - (self.pos % 8) as u32;
            let take = n.min(avail);
            let v = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            out = if take == 64 { v } else { (out << take) | v };
            self.pos += take as usize;
            n -= take;
        }
        Some(out)
    }
}

/// Zigzag mapping of signed to unsigned integers (small magnitudes → small numbers).
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Width code 63 stands for 64 bits, so widths fit in 6 bits.
const FULL: u32 = 63;

/// Writes a signed integer with an adaptive width: `0` + `width` bits reuses the previous width;
/// `1` + 6-bit width + bits sets a new one. Steady streams (timestamp jitter, counter rates) pay
/// one bit over their magnitude.
pub(crate) fn write_int(w: &mut BitWriter, v: i64, width: &mut u32) {
    let z = zigzag(v);
    let mut need = 64 - z.leading_zeros();
    if need >= FULL {
        need = 64;
    }
    if need <= *width && *width - need <= 6 {
        w.bit(false);
    } else {
        w.bit(true);
        w.bits(u64::from(if need == 64 { FULL } else { need }), 6);
        *width = need;
    }
    w.bits(z, *width);
}

// Always inlined: two calls per sample in the integer chunks' decode loop.
#[inline(always)]
pub(crate) fn read_int(r: &mut BitReader<'_>, width: &mut u32) -> Option<i64> {
    // Fast path: the flag, a new width if any and the value from one 64-bit load (it holds at
    // least 57 bits), which covers every width up to 50.
    if let Some(w) = r.peek() {
        let (head, wd) = if w >> 63 == 0 {
            (1, *width)
        } else {
            let code = ((w >> 57) & 0x3f) as u32;
            (7, if code == FULL { 64 } else { code })
        };
        if head + wd <= 57 {
            let z = if wd == 0 { 0 } else { (w << head) >> (64 - wd) };
            r.skip(head + wd);
            *width = wd;
            return Some(unzigzag(z));
        }
    }
    if r.bit()? {
        let code = r.bits(6)? as u32;
        *width = if code == FULL { 64 } else { code };
    }
    Some(unzigzag(r.bits(*width)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ints_round_trip(vs in proptest::collection::vec(any::<i64>(), 0..50),
                           small in proptest::collection::vec(-100i64..100, 0..50)) {
            let mut w = BitWriter::default();
            let mut width = 0;
            for v in vs.iter().chain(&small) {
                write_int(&mut w, *v, &mut width);
            }
            let mut r = BitReader::new(w.bytes());
            let mut width = 0;
            for v in vs.iter().chain(&small) {
                prop_assert_eq!(read_int(&mut r, &mut width), Some(*v));
            }
        }
    }

    #[test]
    fn bits_round_trip() {
        let mut w = BitWriter::default();
        w.bits(0b101, 3);
        w.bits(u64::MAX, 64);
        w.bit(true);
        w.bits(0x1234, 13);
        let mut r = BitReader::new(w.bytes());
        assert_eq!(r.bits(3), Some(0b101));
        assert_eq!(r.bits(64), Some(u64::MAX));
        assert_eq!(r.bit(), Some(true));
        assert_eq!(r.bits(13), Some(0x1234));
        assert_eq!(r.bits(8), None);
    }
}
