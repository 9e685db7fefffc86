//! Minimal RLP (Ethereum Yellow Paper, appendix B): byte strings and lists only.
//!
//! Owns just enough of the encoding for genesis `extraData`. The decoder is strict: it
//! accepts only canonical encodings and exactly one item with no trailing bytes, because
//! its input may come from a user-supplied base genesis. It never allocates more than the
//! input implies.

/// A decoded RLP item borrowing from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    Bytes(&'a [u8]),
    List(Vec<Item<'a>>),
}

/// Why bytes are not one canonical RLP item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RlpError {
    #[error("rlp: input ends before the item does")]
    Truncated,
    #[error("rlp: {0} trailing bytes after the item")]
    Trailing(usize),
    #[error("rlp: non-canonical encoding at offset {0}")]
    NonCanonical(usize),
    #[error("rlp: nesting deeper than {MAX_DEPTH} lists")]
    TooDeep,
}

/// Deep enough for any extraData; stops a hostile input from exhausting the stack.
const MAX_DEPTH: usize = 16;

fn write_length(out: &mut Vec<u8>, len: usize, short_base: u8) {
    if len <= 55 {
        out.push(short_base + len as u8);
    } else {
        let be = (len as u64).to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        out.push(short_base + 55 + (be.len() - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
}

/// Appends the encoding of a byte string.
pub(crate) fn encode_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    if let [b] = bytes {
        if *b < 0x80 {
            out.push(*b);
            return;
        }
    }
    write_length(out, bytes.len(), 0x80);
    out.extend_from_slice(bytes);
}

/// Appends an unsigned integer as a scalar: big-endian, no leading zeros, zero is `0x80`.
pub(crate) fn encode_uint(out: &mut Vec<u8>, value: u64) {
    let be = value.to_be_bytes();
    let skip = be.iter().take_while(|b| **b == 0).count();
    encode_bytes(out, &be[skip..]);
}

/// Appends a list whose items are already encoded, concatenated, in `payload`.
pub(crate) fn encode_list(out: &mut Vec<u8>, payload: &[u8]) {
    write_length(out, payload.len(), 0xc0);
    out.extend_from_slice(payload);
}

/// Decodes exactly one canonical item spanning all of `input`.
pub(crate) fn decode(input: &[u8]) -> Result<Item<'_>, RlpError> {
    let (item, used) = decode_at(input, 0, 0)?;
    match input.len() - used {
        0 => Ok(item),
        n => Err(RlpError::Trailing(n)),
    }
}

/// Decodes one item starting at `pos`; returns it and the offset just past it.
fn decode_at(input: &[u8], pos: usize, depth: usize) -> Result<(Item<'_>, usize), RlpError> {
    let prefix = *input.get(pos).ok_or(RlpError::Truncated)?;
    let (is_list, header, len) = match prefix {
        0x00..=0x7f => return Ok((Item::Bytes(&input[pos..pos + 1]), pos + 1)),
        0x80..=0xb7 => (false, 1, usize::from(prefix - 0x80)),
        0xb8..=0xbf => {
            let n = usize::from(prefix - 0xb7);
            (false, 1 + n, long_length(input, pos, n)?)
        }
        0xc0..=0xf7 => (true, 1, usize::from(prefix - 0xc0)),
        0xf8..=0xff => {
            let n = usize::from(prefix - 0xf7);
            (true, 1 + n, long_length(input, pos, n)?)
        }
    };
    let start = pos + header;
    let end = start.checked_add(len).ok_or(RlpError::Truncated)?;
    if end > input.len() {
        return Err(RlpError::Truncated);
    }
    if !is_list {
        // A single byte below 0x80 must be encoded as itself.
        if len == 1 && input[start] < 0x80 {
            return Err(RlpError::NonCanonical(pos));
        }
        return Ok((Item::Bytes(&input[start..end]), end));
    }
    if depth >= MAX_DEPTH {
        return Err(RlpError::TooDeep);
    }
    let mut items = Vec::new();
    let mut at = start;
    while at < end {
        let (item, next) = decode_at(&input[..end], at, depth + 1)?;
        items.push(item);
        at = next;
    }
    Ok((Item::List(items), end))
}

/// Reads the `n`-byte big-endian length after the prefix at `pos`, rejecting leading zeros
/// and lengths that fit the short form.
fn long_length(input: &[u8], pos: usize, n: usize) -> Result<usize, RlpError> {
    let bytes = input.get(pos + 1..pos + 1 + n).ok_or(RlpError::Truncated)?;
    if bytes[0] == 0 || n > std::mem::size_of::<usize>() {
        return Err(RlpError::NonCanonical(pos));
    }
    let len = bytes
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    if len <= 55 {
        return Err(RlpError::NonCanonical(pos));
    }
    Ok(len)
}

impl Item<'_> {
    pub(crate) fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Item::Bytes(b) => Some(b),
            Item::List(_) => None,
        }
    }

    pub(crate) fn as_list(&self) -> Option<&[Item<'_>]> {
        match self {
            Item::List(items) => Some(items),
            Item::Bytes(_) => None,
        }
    }

    /// A canonical scalar: no leading zero byte, at most 8 bytes.
    pub(crate) fn as_uint(&self) -> Option<u64> {
        let b = self.as_bytes()?;
        if b.len() > 8 || b.first() == Some(&0) {
            return None;
        }
        Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_bytes(&mut out, b);
        out
    }

    // Vectors from the Ethereum wiki's RLP page (facts, re-typed).
    #[test]
    fn encodes_known_vectors() {
        assert_eq!(bytes(b"dog"), [0x83, b'd', b'o', b'g']);
        assert_eq!(bytes(b""), [0x80]);
        assert_eq!(bytes(&[0x00]), [0x00]);
        assert_eq!(bytes(&[0x0f]), [0x0f]);
        assert_eq!(bytes(&[0x80]), [0x81, 0x80]);
        let mut out = Vec::new();
        encode_uint(&mut out, 0);
        assert_eq!(out, [0x80]);
        out.clear();
        encode_uint(&mut out, 1024);
        assert_eq!(out, [0x82, 0x04, 0x00]);
        let mut payload = bytes(b"cat");
        payload.extend(bytes(b"dog"));
        out.clear();
        encode_list(&mut out, &payload);
        assert_eq!(out, [0xc8, 0x83, b'c', b'a', b't', 0x83, b'd', b'o', b'g']);
        out.clear();
        encode_list(&mut out, &[]);
        assert_eq!(out, [0xc0]);
        let lorem = b"Lorem ipsum dolor sit amet, consectetur adipisicing elit";
        let enc = bytes(lorem);
        assert_eq!(&enc[..2], [0xb8, 0x38]);
        assert_eq!(&enc[2..], lorem);
    }

    #[test]
    fn round_trips_nested_and_long_items() {
        let long = vec![0xab; 300];
        let mut inner = Vec::new();
        encode_bytes(&mut inner, &long);
        encode_list(&mut inner, &[]);
        encode_uint(&mut inner, 7);
        let mut out = Vec::new();
        encode_list(&mut out, &inner);
        assert_eq!(out[0], 0xf9, "payload over 255 bytes takes a 2-byte length");
        let item = decode(&out).unwrap();
        let list = item.as_list().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].as_bytes().unwrap(), &long[..]);
        assert_eq!(list[1], Item::List(vec![]));
        assert_eq!(list[2].as_uint(), Some(7));
    }

    #[test]
    fn rejects_non_canonical_and_malformed_input() {
        assert_eq!(decode(&[0x81, 0x05]), Err(RlpError::NonCanonical(0)));
        assert_eq!(decode(&[0xb8, 0x01, 0xff]), Err(RlpError::NonCanonical(0)));
        assert_eq!(decode(&[0xb9, 0x00, 0x40]), Err(RlpError::NonCanonical(0)));
        assert_eq!(decode(&[0x83, b'd', b'o']), Err(RlpError::Truncated));
        assert_eq!(decode(&[0xc1]), Err(RlpError::Truncated));
        assert_eq!(decode(&[]), Err(RlpError::Truncated));
        assert_eq!(decode(&[0x80, 0x80]), Err(RlpError::Trailing(1)));
        // A list whose declared length cuts its last item short.
        assert_eq!(decode(&[0xc2, 0x83, b'a']), Err(RlpError::Truncated));
        let mut deep = vec![0xc0];
        for _ in 0..40 {
            let mut out = Vec::new();
            encode_list(&mut out, &deep);
            deep = out;
        }
        assert_eq!(decode(&deep), Err(RlpError::TooDeep));
    }

    #[test]
    fn scalar_rejects_leading_zero() {
        let item = decode(&[0x82, 0x00, 0x01]).unwrap();
        assert_eq!(item.as_uint(), None);
    }
}
