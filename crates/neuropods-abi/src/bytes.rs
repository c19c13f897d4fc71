//! The one reader of binary formats from untrusted bytes: serialized
//! tensors (the core's `serialize`), the worker's messages, TensorFlow's
//! protobufs, the server's BYTES elements. Every read is bounds-checked and
//! fails naming the field, its offset and what was left, so that no format
//! writes its own bounds checks or its own words for a short read.

/// Reads fields off the front of a byte slice, in order.
#[derive(Clone, Debug)]
pub struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        ByteReader { bytes, pos: 0 }
    }

    /// Bytes read so far: the offset of the next field.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes, as field `what`.
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let found = self
            .pos
            .checked_add(n)
            .and_then(|end| Some((self.bytes.get(self.pos..end)?, end)));
        let Some((slice, end)) = found else {
            return Err(format!(
                "{what} needs {n} bytes at offset {} but only {} remain",
                self.pos,
                self.remaining()
            ));
        };
        self.pos = end;
        Ok(slice)
    }

    /// The next `N` bytes, as an array.
    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let slice = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self, what: &str) -> Result<u8, String> {
        self.array::<1>(what).map(|[b]| b)
    }

    /// A little-endian u16.
    pub fn u16(&mut self, what: &str) -> Result<u16, String> {
        self.array(what).map(u16::from_le_bytes)
    }

    /// A little-endian u32.
    pub fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    /// A little-endian u64.
    pub fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A protobuf varint (at most 10 bytes).
    pub fn varint(&mut self, what: &str) -> Result<u64, String> {
        let start = self.pos;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8(what)?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(format!(
            "{what} at offset {start} is a varint longer than 10 bytes"
        ))
    }

    /// A count of items of at least `min_len` bytes each, refused when the
    /// bytes left cannot hold that many: a claimed count never allocates
    /// more than the input could fill.
    pub fn count(&mut self, min_len: usize, what: &str) -> Result<usize, String> {
        let at = self.pos;
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_len) > self.remaining() {
            return Err(format!(
                "{n} {what} claimed at offset {at}: more than it holds ({} bytes left)",
                self.remaining()
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_order_and_names_the_field_of_a_short_read() {
        let mut r = ByteReader::new(&[1, 2, 0, 3, 0, 0, 0, 9]);
        assert_eq!(r.u8("tag"), Ok(1));
        assert_eq!(r.u16("version"), Ok(2));
        assert_eq!(r.u32("length"), Ok(3));
        assert_eq!(r.position(), 7);
        assert_eq!(
            r.u64("id"),
            Err("id needs 8 bytes at offset 7 but only 1 remain".into())
        );
        // A failed read consumes nothing.
        assert_eq!(r.take(1, "last"), Ok(&[9u8][..]));
        assert!(r.is_empty());
        assert!(r
            .take(usize::MAX, "huge")
            .unwrap_err()
            .contains("huge needs"));
    }

    #[test]
    fn varints_and_counts_are_bounded() {
        assert_eq!(ByteReader::new(&[0xac, 0x02]).varint("v"), Ok(300));
        let long = ByteReader::new(&[0xff; 11]).varint("key").unwrap_err();
        assert!(long.contains("longer than 10 bytes"), "{long}");
        let cut = ByteReader::new(&[0x80]).varint("len").unwrap_err();
        assert!(cut.starts_with("len needs 1 bytes at offset 1"), "{cut}");
        let mut r = ByteReader::new(&[3, 0, 0, 0, 0, 0]);
        let claimed = r.count(1, "names").unwrap_err();
        assert!(claimed.contains("3 names claimed at offset 0"), "{claimed}");
    }
}
