//! A small, strict deflate decoder (RFC 1951) written independently of flate2, for the tests
//! and the fuzz target that check what the compression layer writes: besides the bytes, it
//! reports the longest back-reference, so a test can tell whether the negotiated window was
//! respected.

/// The history a deflate back-reference can reach.
pub(crate) const MAX_DISTANCE: usize = 32 << 10;

/// Reads a raw deflate stream least significant bit first.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    bits: u32,
    count: u32,
}

impl Bits<'_> {
    fn take(&mut self, n: u32) -> Result<u32, &'static str> {
        while self.count < n {
            let byte = *self
                .data
                .get(self.pos)
                .ok_or("the data ends inside a block")?;
            self.pos += 1;
            self.bits |= u32::from(byte) << self.count;
            self.count += 8;
        }
        let value = self.bits & ((1 << n) - 1);
        self.bits >>= n;
        self.count -= n;
        Ok(value)
    }

    /// Bytes are loaded only when needed, so what is left is the rest of the last one.
    fn align(&mut self) {
        self.bits = 0;
        self.count = 0;
    }
}

/// A canonical Huffman code: how many codes of each length, and the symbols in code
/// order.
struct Huffman {
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Result<Self, &'static str> {
        let mut counts = [0u16; 16];
        for &len in lengths {
            counts[usize::from(len)] += 1;
        }
        counts[0] = 0;
        let mut left = 1i32;
        for &count in &counts[1..] {
            left = 2 * left - i32::from(count);
            if left < 0 {
                return Err("an over-subscribed Huffman code");
            }
        }
        let mut next = [0u16; 16];
        for len in 1..15 {
            next[len + 1] = next[len] + counts[len];
        }
        let mut symbols = vec![0; lengths.len()];
        for (symbol, &len) in lengths.iter().enumerate() {
            if len != 0 {
                symbols[usize::from(next[usize::from(len)])] = symbol as u16;
                next[usize::from(len)] += 1;
            }
        }
        Ok(Huffman { counts, symbols })
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Result<u16, &'static str> {
        // `first` is the first code of the current length, `index` its symbol's place.
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for &count in &self.counts[1..] {
            code |= bits.take(1)? as i32;
            let count = i32::from(count);
            if code - first < count {
                return Ok(self.symbols[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("an undefined Huffman code")
    }
}

/// Inflates `data`, a raw deflate stream that ends on a block boundary and holds no
/// final block, onto `out` (which holds the history it may refer to), stopping with an
/// error once `out` would grow past `limit`. Returns the longest back-reference distance.
pub(crate) fn inflate(data: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<usize, &'static str> {
    let mut bits = Bits {
        data,
        pos: 0,
        bits: 0,
        count: 0,
    };
    let mut max_distance = 0;
    while bits.pos < data.len() {
        if bits.take(1)? == 1 {
            return Err("a final block");
        }
        let (literals, distances) = match bits.take(2)? {
            0 => {
                bits.align();
                let len = bits.take(16)?;
                if bits.take(16)? != !len & 0xffff {
                    return Err("a stored block with a bad length");
                }
                for _ in 0..len {
                    out.push(bits.take(8)? as u8);
                }
                if out.len() > limit {
                    return Err("more data than the message");
                }
                continue;
            }
            1 => {
                let mut lengths = [8u8; 288];
                lengths[144..256].fill(9);
                lengths[256..280].fill(7);
                (Huffman::new(&lengths)?, Huffman::new(&[5; 30])?)
            }
            2 => {
                let literal_count = bits.take(5)? as usize + 257;
                let distance_count = bits.take(5)? as usize + 1;
                let code_count = bits.take(4)? as usize + 4;
                if literal_count > 286 || distance_count > 30 {
                    return Err("too many codes");
                }
                const ORDER: [usize; 19] = [
                    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
                ];
                let mut code_lengths = [0u8; 19];
                for &i in &ORDER[..code_count] {
                    code_lengths[i] = bits.take(3)? as u8;
                }
                let code = Huffman::new(&code_lengths)?;
                let mut lengths = vec![0u8; literal_count + distance_count];
                let mut i = 0;
                while i < lengths.len() {
                    let (len, repeat) = match code.decode(&mut bits)? {
                        len @ 0..=15 => (len as u8, 1),
                        16 => {
                            let previous = *lengths[..i].last().ok_or("a repeat first")?;
                            (previous, 3 + bits.take(2)? as usize)
                        }
                        17 => (0, 3 + bits.take(3)? as usize),
                        _ => (0, 11 + bits.take(7)? as usize),
                    };
                    let run = lengths.get_mut(i..i + repeat).ok_or("too many lengths")?;
                    run.fill(len);
                    i += repeat;
                }
                if lengths[256] == 0 {
                    return Err("no end-of-block code");
                }
                let (l, d) = lengths.split_at(literal_count);
                (Huffman::new(l)?, Huffman::new(d)?)
            }
            _ => return Err("block type 3"),
        };
        loop {
            let symbol = usize::from(literals.decode(&mut bits)?);
            if symbol < 256 {
                out.push(symbol as u8);
            } else if symbol == 256 {
                break;
            } else {
                let length = match symbol - 257 {
                    i @ 0..=7 => i + 3,
                    i @ 8..=27 => {
                        let extra = (i - 4) / 4;
                        ((4 + (i - 4) % 4) << extra) + 3 + bits.take(extra as u32)? as usize
                    }
                    28 => 258,
                    _ => return Err("an invalid length code"),
                };
                let distance = match usize::from(distances.decode(&mut bits)?) {
                    d @ 0..=3 => d + 1,
                    d @ 4..=29 => {
                        let extra = d / 2 - 1;
                        ((2 + d % 2) << extra) + 1 + bits.take(extra as u32)? as usize
                    }
                    _ => return Err("an invalid distance code"),
                };
                if distance > out.len() || distance > MAX_DISTANCE {
                    return Err("a reference before the start of the data");
                }
                max_distance = max_distance.max(distance);
                for _ in 0..length {
                    out.push(out[out.len() - distance]);
                }
            }
            if out.len() > limit {
                return Err("more data than the message");
            }
        }
    }
    Ok(max_distance)
}
