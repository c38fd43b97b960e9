//! The bits of RFC 6455 framing that the compression layer needs: parsing and writing frame
//! headers, and masking. Kept apart from tungstenite's own codec because this layer must see
//! frames that tungstenite would reject (RSV1 set) and must never buffer whole payloads.

use super::DeflateError;

/// Continuation frame.
pub(crate) const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub(crate) const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub(crate) const OP_BINARY: u8 = 0x2;
/// Close frame.
pub(crate) const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub(crate) const OP_PING: u8 = 0x9;
/// Pong frame.
pub(crate) const OP_PONG: u8 = 0xA;

/// The longest header: 2 bytes, an 8-byte extended length and a 4-byte masking key.
pub(crate) const MAX_HEADER: usize = 14;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    pub(crate) rsv1: bool,
    pub(crate) rsv2: bool,
    pub(crate) rsv3: bool,
    pub(crate) opcode: u8,
    pub(crate) mask: Option<[u8; 4]>,
    /// Payload length.
    pub(crate) len: u64,
    /// How many bytes the header itself took.
    pub(crate) header_len: usize,
}

impl Header {
    /// Close, ping, pong and the reserved control opcodes 0xB-0xF.
    pub(crate) fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parses a header at the start of `buf`. `Ok(None)`: more bytes are needed.
///
/// # Errors
///
/// A 64-bit length with its most significant bit set (RFC 6455 §5.2 forbids it): 1002.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<Header>, DeflateError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    let masked = b1 & 0x80 != 0;
    let (len, mut pos) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(DeflateError::protocol(
                        "frame length has its most significant bit set",
                    ));
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let mask = if masked {
        match buf.get(pos..pos + 4) {
            Some(k) => {
                pos += 4;
                Some([k[0], k[1], k[2], k[3]])
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        rsv2: b0 & 0x20 != 0,
        rsv3: b0 & 0x10 != 0,
        opcode: b0 & 0x0F,
        mask,
        len,
        header_len: pos,
    }))
}

/// Writes a header with the shortest length encoding into `out`; returns its length.
pub(crate) fn encode(
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    out: &mut [u8; MAX_HEADER],
) -> usize {
    out[0] = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | (opcode & 0x0F);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut pos = match len {
        0..=125 => {
            // Fits in the 7-bit field: the match arm guarantees the value.
            out[1] = mask_bit | len as u8;
            2
        }
        126..=0xFFFF => {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&len.to_be_bytes());
            10
        }
    };
    if let Some(key) = mask {
        out[pos..pos + 4].copy_from_slice(&key);
        pos += 4;
    }
    pos
}

/// XORs `data` with `key`, where `data` starts `offset` bytes into the frame's payload.
/// Masking and unmasking are the same operation.
pub(crate) fn apply_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
    // Rotate the key so that index 0 of `data` lines up with payload byte `offset`.
    let shift = (offset % 4) as usize;
    let k = [
        key[shift],
        key[(shift + 1) % 4],
        key[(shift + 2) % 4],
        key[(shift + 3) % 4],
    ];
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Each full chunk is a multiple of 4 bytes, so the tail starts on key index 0 again.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(fin: bool, rsv1: bool, opcode: u8, mask: Option<[u8; 4]>, len: u64) {
        let mut out = [0u8; MAX_HEADER];
        let n = encode(fin, rsv1, opcode, mask, len, &mut out);
        let h = parse(&out[..n]).unwrap().unwrap();
        assert_eq!(
            h,
            Header {
                fin,
                rsv1,
                rsv2: false,
                rsv3: false,
                opcode,
                mask,
                len,
                header_len: n
            }
        );
        // Every strict prefix is incomplete, never an error.
        for cut in 0..n {
            assert_eq!(parse(&out[..cut]).unwrap(), None, "prefix {cut} of {len}");
        }
    }

    #[test]
    fn all_length_encodings_round_trip() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 1 << 32, (1 << 63) - 1] {
            roundtrip(true, false, OP_TEXT, None, len);
            roundtrip(false, true, OP_BINARY, Some([1, 2, 3, 4]), len);
        }
    }

    #[test]
    fn shortest_encoding_is_used() {
        let mut out = [0u8; MAX_HEADER];
        assert_eq!(encode(true, false, OP_PING, None, 125, &mut out), 2);
        assert_eq!(encode(true, false, OP_TEXT, None, 126, &mut out), 4);
        assert_eq!(encode(true, false, OP_TEXT, None, 65536, &mut out), 10);
        assert_eq!(
            encode(true, false, OP_TEXT, Some([0; 4]), 65536, &mut out),
            14
        );
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        // 5 encoded in 16 and 64 bits: tungstenite accepts these, so do we.
        let h = parse(&[0x82, 126, 0, 5]).unwrap().unwrap();
        assert_eq!((h.len, h.header_len), (5, 4));
        let h = parse(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5])
            .unwrap()
            .unwrap();
        assert_eq!((h.len, h.header_len), (5, 10));
    }

    #[test]
    fn msb_of_64_bit_length_is_an_error() {
        let err = parse(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1]).unwrap_err();
        assert_eq!(err.code, 1002);
    }

    #[test]
    fn reserved_bits_are_reported() {
        let h = parse(&[0xF1, 0]).unwrap().unwrap();
        assert!(h.fin && h.rsv1 && h.rsv2 && h.rsv3);
        assert_eq!(h.opcode, OP_TEXT);
        assert!(!h.is_control());
        assert!(parse(&[0x8B, 0]).unwrap().unwrap().is_control());
    }

    #[test]
    fn masking_with_offsets_matches_bytewise_masking() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let expected: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        // Masking in arbitrary pieces, each with its offset, gives the same result.
        for piece in [1, 3, 4, 7, 8, 9, 64, 1000] {
            let mut masked = data.clone();
            let mut offset = 0;
            for chunk in masked.chunks_mut(piece) {
                apply_mask(chunk, key, offset);
                offset += chunk.len() as u64;
            }
            assert_eq!(masked, expected, "piece size {piece}");
        }
        // RFC 6455 §5.7: a masked "Hello".
        let mut hello = *b"Hello";
        apply_mask(&mut hello, key, 0);
        assert_eq!(hello, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }
}
