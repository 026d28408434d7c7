//! OpenPGP partial-body framing (RFC 9580 §4.2.1.4) written straight
//! through, for the literal and the SEIP packet.
//!
//! Sequoia's framing writer (`PartialBodyFilter`) copies every write smaller
//! than its 4 MiB threshold twice (`buf.to_vec()`, then `append`) before it
//! frames it; for the literal packet that is every plaintext byte. Here a
//! write is framed where it lies: as soon as at least [`MIN_PART`] bytes are
//! in hand, the largest power of two of them goes out as one partial chunk
//! (its one-octet length, then the bytes, passed on without copying), and
//! only a remainder shorter than [`MIN_PART`] is kept for the next write.
//! [`Partial::finish`] writes what is left as the last, definite-length
//! chunk, which the format requires.
//!
//! Every partial chunk is at least 512 octets (the format's minimum for the
//! first one) and at most 2^30. Readers (GnuPG, sequoia) accept any such
//! chunking; only the framing bytes differ from sequoia's writer, never the
//! packet contents.

use std::io::{self, Write};

/// The smallest partial chunk written (RFC 9580: the first partial length
/// must be at least 512 octets; later ones may be smaller, ours are not).
pub const MIN_PART: usize = 512;
/// The largest partial chunk the format allows (2^30).
const MAX_PART_LOG2: u32 = 30;

/// One new-format packet with a partial-body body, written into `inner`.
pub struct Partial<W: Write> {
    inner: W,
    /// Bytes written but not yet framed: fewer than [`MIN_PART`].
    carry: Vec<u8>,
}

impl<W: Write> Partial<W> {
    /// Writes the new-format packet header for `tag` (0..=63) into `inner`;
    /// the body follows through `write`.
    pub fn new(mut inner: W, tag: u8) -> io::Result<Self> {
        inner.write_all(&[0xC0 | (tag & 0x3F)])?;
        Ok(Self {
            inner,
            carry: Vec::with_capacity(MIN_PART),
        })
    }

    /// Writes the last chunk (definite length, possibly 0) and returns
    /// `inner`.
    pub fn finish(mut self) -> io::Result<W> {
        let mut header = [0u8; 5];
        let n = definite_length(self.carry.len(), &mut header);
        self.inner.write_all(&header[..n])?;
        self.inner.write_all(&self.carry)?;
        Ok(self.inner)
    }
}

/// The new-format definite length of `len` into `out`; returns its octets.
fn definite_length(len: usize, out: &mut [u8; 5]) -> usize {
    match len {
        0..=191 => {
            out[0] = len as u8;
            1
        }
        192..=8383 => {
            let l = len - 192;
            out[0] = (l >> 8) as u8 + 192;
            out[1] = (l & 0xFF) as u8;
            2
        }
        _ => {
            out[0] = 0xFF;
            out[1..].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            5
        }
    }
}

impl<W: Write> Write for Partial<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while self.carry.len() + buf.len() >= MIN_PART {
            let total = self.carry.len() + buf.len();
            let log2 = total.ilog2().min(MAX_PART_LOG2);
            let size = 1usize << log2;
            // 224 + log2: a partial body length of 2^log2 octets.
            self.inner.write_all(&[0xE0 | log2 as u8])?;
            // The carry is shorter than MIN_PART <= size.
            let (head, rest) = buf.split_at(size - self.carry.len());
            if !self.carry.is_empty() {
                self.inner.write_all(&self.carry)?;
                self.carry.clear();
            }
            self.inner.write_all(head)?;
            buf = rest;
        }
        self.carry.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a partial-body packet back: (tag, body, chunk lengths).
    fn unframe(bytes: &[u8]) -> (u8, Vec<u8>, Vec<usize>) {
        let tag = bytes[0] & 0x3F;
        assert_eq!(bytes[0] & 0xC0, 0xC0, "new-format header");
        let (mut body, mut chunks, mut at) = (Vec::new(), Vec::new(), 1);
        loop {
            let first = bytes[at] as usize;
            let (len, partial, skip) = match first {
                0..=191 => (first, false, 1),
                192..=223 => (
                    ((first - 192) << 8) + bytes[at + 1] as usize + 192,
                    false,
                    2,
                ),
                224..=254 => (1 << (first & 0x1F), true, 1),
                _ => (
                    u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]])
                        as usize,
                    false,
                    5,
                ),
            };
            at += skip;
            body.extend_from_slice(&bytes[at..at + len]);
            chunks.push(len);
            at += len;
            if !partial {
                assert_eq!(at, bytes.len(), "nothing after the last chunk");
                return (tag, body, chunks);
            }
        }
    }

    #[test]
    fn any_writes_frame_to_the_same_body() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [
            0, 1, 191, 192, 511, 512, 513, 8383, 8384, 65536, 262_150, 300_000,
        ] {
            for write in [1, 6, 511, 512, 4096, 262_144, 1 << 20] {
                let mut w = Partial::new(Vec::new(), 11).expect("header");
                for piece in data[..len].chunks(write) {
                    w.write_all(piece).expect("write");
                }
                let out = w.finish().expect("finish");
                let (tag, body, chunks) = unframe(&out);
                assert_eq!(tag, 11);
                assert!(body == data[..len], "len {len}, writes of {write}");
                let (last, parts) = chunks.split_last().expect("a last chunk");
                assert!(
                    *last < MIN_PART,
                    "len {len}, writes of {write}: last {last}"
                );
                for p in parts {
                    assert!(p.is_power_of_two() && *p >= MIN_PART, "chunk {p}");
                }
            }
        }
    }

    #[test]
    fn whole_chunks_pass_through_with_a_small_carry() {
        // A 6-byte header, then 256 KiB writes: one 256 KiB chunk per write.
        let mut w = Partial::new(Vec::new(), 11).expect("header");
        w.write_all(b"b\0\0\0\0\0").expect("write");
        for _ in 0..3 {
            w.write_all(&[7u8; 1 << 18]).expect("write");
        }
        let (_, body, chunks) = unframe(&w.finish().expect("finish"));
        assert_eq!(chunks, vec![1 << 18, 1 << 18, 1 << 18, 6]);
        assert_eq!(body.len(), 6 + 3 * (1 << 18));
    }
}
