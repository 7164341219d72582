//! Tensor maps (`CUtensorMap`) and the tiled TMA box: what `cuTensorMapEncodeTiled` accepts
//! (CUDA driver API, "Tensor Map Object Management"; the same checks as NVIDIA/Fuser
//! csrc/tma.cpp), the 128 opaque bytes the emulator's encoder writes, and the address function
//! of a box in shared memory (PTX ISA 9.7.9.25 `cp.async.bulk.tensor`, "Tensor copy
//! restrictions", and the swizzle modes of 5.5.x "Tensor access modes").
//!
//! The opaque bytes are the emulator's own format (the real driver's is undocumented): a magic,
//! the fields, and a checksum, so that a map not made by the encoder (or changed after) is
//! caught instead of being read as garbage (sanitizer S14 of docs/emulator.md).

/// `CU_TENSOR_MAP_NUM_QWORDS * 8`.
pub const TMAP_BYTES: usize = 128;
const MAGIC: u32 = 0x4d54_4246; // "FBTM"
const VERSION: u16 = 1;

/// The swizzle of a box in shared memory (`CUtensorMapSwizzle`; the values are the driver's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swizzle {
    None = 0,
    B32 = 1,
    B64 = 2,
    B128 = 3,
}

impl Swizzle {
    pub fn from_code(c: u32) -> Option<Swizzle> {
        Some(match c {
            0 => Swizzle::None,
            1 => Swizzle::B32,
            2 => Swizzle::B64,
            3 => Swizzle::B128,
            _ => return None,
        })
    }
    /// Bytes of one swizzled row (the span the 16-byte chunks are permuted in); 0 for none.
    pub fn span(self) -> u32 {
        match self {
            Swizzle::None => 0,
            Swizzle::B32 => 32,
            Swizzle::B64 => 64,
            Swizzle::B128 => 128,
        }
    }
    /// Bytes after which the pattern repeats (the alignment a swizzled box needs).
    pub fn repeat(self) -> u32 {
        self.span() * 8
    }
    /// The shared address a byte at linear (unswizzled) address `a` lands at: the 16-byte chunk
    /// index within a row XORed with the row index modulo the row count, on the ABSOLUTE
    /// address (CuTe `Swizzle<B,4,3>`: B = 1, 2, 3 for 32, 64, 128 bytes).
    pub fn apply(self, a: u32) -> u32 {
        let mask = match self {
            Swizzle::None => return a,
            Swizzle::B32 => 1,
            Swizzle::B64 => 3,
            Swizzle::B128 => 7,
        };
        a ^ (((a >> 7) & mask) << 4)
    }
    /// `none|32b|64b|128b` (the CLI spelling).
    pub fn parse(s: &str) -> Option<Swizzle> {
        Some(match s {
            "none" => Swizzle::None,
            "32b" => Swizzle::B32,
            "64b" => Swizzle::B64,
            "128b" => Swizzle::B128,
            _ => return None,
        })
    }
}

/// `CUtensorMapDataType` values and their element sizes (the types fusebert uses and those of
/// the same sizes; packed sub-byte types are not supported).
pub fn dtype_size(code: u32) -> Option<u32> {
    Some(match code {
        0 => 1,                   // UINT8
        1 | 9 => 2,               // UINT16, BFLOAT16
        2 | 3 | 7 | 10..=12 => 4, // UINT32, INT32, FLOAT32, FLOAT32_FTZ, TF32, TF32_FTZ
        4 | 5 | 8 => 8,           // UINT64, INT64, FLOAT64
        6 => 2,                   // FLOAT16
        _ => return None,
    })
}

/// `CU_TENSOR_MAP_DATA_TYPE_*` for the CLI's dtype names (`s8` travels as UINT8: TMA copies bytes).
pub fn dtype_code(name: &str) -> Option<u32> {
    Some(match name {
        "u8" | "s8" => 0,
        "f16" => 6,
        "bf16" => 9,
        "f32" => 7,
        _ => return None,
    })
}

/// A decoded tiled tensor map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMap {
    pub dtype: u32,
    pub rank: u32,
    pub gaddr: u64,
    /// Elements per dimension, innermost first.
    pub dims: [u64; 5],
    /// Byte strides of dimensions 1..rank (`strides[0]` is dimension 1's).
    pub strides: [u64; 4],
    pub boxd: [u32; 5],
    pub estrides: [u32; 5],
    pub swizzle: Swizzle,
    /// `CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA` instead of zeros.
    pub oob_nan: bool,
}

impl TensorMap {
    pub fn esize(&self) -> u32 {
        dtype_size(self.dtype).unwrap_or(1)
    }
    /// Elements the box holds along dimension `d` (`ceil(box / elementStride)`).
    pub fn n(&self, d: usize) -> u32 {
        self.boxd[d].div_ceil(self.estrides[d].max(1))
    }
    /// Bytes of one box in shared memory (what a load's `complete_tx` counts: the whole box,
    /// out-of-bounds elements included).
    pub fn box_bytes(&self) -> u32 {
        (0..self.rank as usize).map(|d| self.n(d)).product::<u32>() * self.esize()
    }
}

/// Encodes like `cuTensorMapEncodeTiled` (interleave NONE, any L2 promotion), rejecting what
/// the driver rejects with CUDA_ERROR_INVALID_VALUE; the message names the rule.
#[allow(clippy::too_many_arguments)] // the driver entry point's own parameter list
pub fn encode_tiled(
    dtype: u32,
    rank: u32,
    gaddr: u64,
    dims: &[u64],
    strides: &[u64],
    boxd: &[u32],
    estrides: &[u32],
    interleave: u32,
    swizzle: u32,
    oob_nan: bool,
) -> Result<[u8; TMAP_BYTES], String> {
    let esize = dtype_size(dtype).ok_or(format!("tensor-map data type {dtype} is not supported"))?;
    if !(1..=5).contains(&rank) {
        return Err(format!("tensorRank {rank} is outside 1..=5"));
    }
    let r = rank as usize;
    if dims.len() != r || boxd.len() != r || estrides.len() != r || strides.len() + 1 != r {
        return Err(format!(
            "rank {rank} needs {rank} dims, box sizes and element strides and {} strides",
            r.saturating_sub(1)
        ));
    }
    if interleave != 0 {
        return Err("interleaved tensor maps are not supported by the emulator".into());
    }
    let swz = Swizzle::from_code(swizzle).ok_or(format!("swizzle {swizzle} is not NONE/32B/64B/128B"))?;
    if gaddr % 16 != 0 {
        return Err(format!("globalAddress {gaddr:#x} is not 16-byte aligned"));
    }
    for (d, &n) in dims.iter().enumerate() {
        if !(1..=1u64 << 32).contains(&n) {
            return Err(format!("globalDim[{d}] = {n} is outside 1..=2^32"));
        }
    }
    let mut prev = dims[0] * esize as u64;
    for (k, &s) in strides.iter().enumerate() {
        if s % 16 != 0 || s >= 1 << 40 {
            return Err(format!("globalStrides[{k}] = {s} must be a multiple of 16 below 2^40"));
        }
        if s < prev {
            return Err(format!("globalStrides[{k}] = {s} is smaller than the dimension below it ({prev} bytes)"));
        }
        prev = s * dims[k + 1];
    }
    for (d, &b) in boxd.iter().enumerate() {
        if !(1..=256).contains(&b) {
            return Err(format!("boxDim[{d}] = {b} is outside 1..=256"));
        }
    }
    let inner = boxd[0] * esize;
    if inner % 16 != 0 {
        return Err(format!("boxDim[0] * elementSize = {inner} bytes is not a multiple of 16"));
    }
    if swz != Swizzle::None && inner > swz.span() {
        return Err(format!("the inner box ({inner} bytes) is wider than the {}-byte swizzle span", swz.span()));
    }
    if swz != Swizzle::None && inner < swz.span() {
        // legal for the driver, but where hardware puts such a box is unverified (nvFuser
        // refuses it too): refused rather than emulated from a guess
        return Err(format!(
            "the inner box ({inner} bytes) is narrower than the {}-byte swizzle span (layout unverified on \
             hardware; the emulator refuses it)",
            swz.span()
        ));
    }
    for (d, &e) in estrides.iter().enumerate() {
        if !(1..=8).contains(&e) {
            return Err(format!("elementStrides[{d}] = {e} is outside 1..=8"));
        }
    }
    if oob_nan && !matches!(dtype, 6 | 7 | 9 | 10..=12) {
        return Err("NaN out-of-bounds fill needs a floating-point data type".into());
    }
    let mut m = TensorMap {
        dtype,
        rank,
        gaddr,
        dims: [1; 5],
        strides: [0; 4],
        boxd: [1; 5],
        estrides: [1; 5],
        swizzle: swz,
        oob_nan,
    };
    m.dims[..r].copy_from_slice(dims);
    m.strides[..r - 1].copy_from_slice(strides);
    m.boxd[..r].copy_from_slice(boxd);
    m.estrides[..r].copy_from_slice(estrides);
    Ok(to_bytes(&m))
}

fn checksum(b: &[u8]) -> u32 {
    // FNV-1a: any changed byte changes it
    b.iter().fold(0x811c_9dc5u32, |h, &x| (h ^ x as u32).wrapping_mul(0x0100_0193))
}

fn to_bytes(m: &TensorMap) -> [u8; TMAP_BYTES] {
    let mut b = [0u8; TMAP_BYTES];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..6].copy_from_slice(&VERSION.to_le_bytes());
    b[6] = m.dtype as u8;
    b[7] = m.rank as u8;
    b[8] = m.swizzle as u8;
    b[9] = m.oob_nan as u8;
    b[16..24].copy_from_slice(&m.gaddr.to_le_bytes());
    for d in 0..5 {
        // dims up to 2^32 stored minus one (as the driver's fields are)
        b[24 + 4 * d..28 + 4 * d].copy_from_slice(&((m.dims[d] - 1) as u32).to_le_bytes());
        b[44 + 2 * d..46 + 2 * d].copy_from_slice(&(m.boxd[d] as u16).to_le_bytes());
        b[54 + d] = m.estrides[d] as u8;
    }
    for k in 0..4 {
        b[64 + 8 * k..72 + 8 * k].copy_from_slice(&m.strides[k].to_le_bytes());
    }
    let c = checksum(&b[..124]);
    b[124..128].copy_from_slice(&c.to_le_bytes());
    b
}

/// Decodes 128 bytes the encoder wrote; anything else (another format, a changed byte) is an
/// error naming what is wrong.
pub fn decode(b: &[u8]) -> Result<TensorMap, String> {
    if b.len() != TMAP_BYTES {
        return Err(format!("a tensor map is {TMAP_BYTES} bytes, got {}", b.len()));
    }
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
    if u32_at(0) != MAGIC {
        return Err("not a tensor map made by cuTensorMapEncodeTiled (no encoder magic)".into());
    }
    if u32_at(124) != checksum(&b[..124]) {
        return Err("the tensor map's bytes were changed after cuTensorMapEncodeTiled (checksum mismatch)".into());
    }
    let mut m = TensorMap {
        dtype: b[6] as u32,
        rank: b[7] as u32,
        gaddr: u64_at(16),
        dims: [1; 5],
        strides: [0; 4],
        boxd: [1; 5],
        estrides: [1; 5],
        swizzle: Swizzle::from_code(b[8] as u32).ok_or("bad swizzle code")?,
        oob_nan: b[9] != 0,
    };
    for d in 0..5 {
        m.dims[d] = u32_at(24 + 4 * d) as u64 + 1;
        m.boxd[d] = u16::from_le_bytes([b[44 + 2 * d], b[45 + 2 * d]]) as u32;
        m.estrides[d] = b[54 + d] as u32;
    }
    for k in 0..4 {
        m.strides[k] = u64_at(64 + 8 * k);
    }
    Ok(m)
}

/// One box element: its byte offset in the (unswizzled) shared box and, when in bounds, its
/// global address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxElem {
    pub lin: u32,
    pub src: Option<u64>,
}

/// The box at element coordinates `coords` (innermost first), element by element in shared
/// order (dimension 0 fastest): `c_d = coord_d + i_d * elementStride_d`, in bounds when
/// `0 <= c_d < dim_d` for every d, `src = gaddr + c_0 * esize + sum c_d * stride_{d-1}`.
pub fn box_elements(m: &TensorMap, coords: &[i32]) -> Vec<BoxElem> {
    let r = m.rank as usize;
    let n: Vec<u32> = (0..r).map(|d| m.n(d)).collect();
    let total: u32 = n.iter().product();
    let es = m.esize();
    let mut out = Vec::with_capacity(total as usize);
    for lin in 0..total {
        let mut rest = lin;
        let mut src = m.gaddr as i128;
        let mut inb = true;
        for d in 0..r {
            let i = rest % n[d];
            rest /= n[d];
            let c = coords[d] as i64 + (i * m.estrides[d]) as i64;
            inb &= c >= 0 && (c as u64) < m.dims[d];
            let stride = if d == 0 { es as u64 } else { m.strides[d - 1] };
            src += c as i128 * stride as i128;
        }
        out.push(BoxElem { lin: lin * es, src: inb.then_some(src as u64) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_tamper() {
        let b = encode_tiled(6, 2, 0x1000, &[100, 7], &[208], &[64, 4], &[1, 1], 0, 3, false).unwrap();
        let m = decode(&b).unwrap();
        assert_eq!((m.rank, m.dims[0], m.dims[1], m.strides[0], m.boxd[0], m.boxd[1]), (2, 100, 7, 208, 64, 4));
        assert_eq!(m.swizzle, Swizzle::B128);
        assert_eq!(m.box_bytes(), 64 * 4 * 2);
        let mut t = b;
        t[16] ^= 1;
        assert!(decode(&t).unwrap_err().contains("checksum"));
        assert!(decode(&[0u8; 128]).unwrap_err().contains("magic"));
    }

    #[test]
    fn encoder_rejects_what_the_driver_rejects() {
        let enc = |g: u64, dims: &[u64], st: &[u64], bx: &[u32], es: &[u32], swz: u32| {
            encode_tiled(6, dims.len() as u32, g, dims, st, bx, es, 0, swz, false)
        };
        assert!(enc(0x1008, &[64, 2], &[128], &[64, 2], &[1, 1], 0).unwrap_err().contains("16-byte"));
        assert!(enc(0x1000, &[64, 2], &[120], &[64, 2], &[1, 1], 0).unwrap_err().contains("multiple of 16"));
        assert!(enc(0x1000, &[64, 2], &[64], &[64, 2], &[1, 1], 0).unwrap_err().contains("smaller"));
        assert!(enc(0x1000, &[64, 2], &[128], &[257, 2], &[1, 1], 0).unwrap_err().contains("1..=256"));
        assert!(enc(0x1000, &[64, 2], &[128], &[4, 2], &[1, 1], 0).unwrap_err().contains("multiple of 16"));
        assert!(enc(0x1000, &[128, 2], &[256], &[128, 2], &[1, 1], 3).unwrap_err().contains("wider"));
        assert!(enc(0x1000, &[64, 2], &[128], &[64, 2], &[1, 9], 0).unwrap_err().contains("1..=8"));
        assert!(enc(0x1000, &[64, 2], &[128], &[64, 2], &[1, 1], 0).is_ok());
    }

    #[test]
    fn swizzle_is_a_permutation_of_chunks_within_a_row() {
        for s in [Swizzle::B32, Swizzle::B64, Swizzle::B128] {
            let rep = s.repeat();
            let mut seen = vec![false; rep as usize];
            for a in 0..rep {
                let b = s.apply(a);
                assert_eq!(b & 15, a & 15);
                assert_eq!(b / s.span(), a / s.span());
                seen[b as usize] = true;
            }
            assert!(seen.iter().all(|&x| x));
        }
        assert_eq!(Swizzle::B128.apply(0x80), 0x90);
        assert_eq!(Swizzle::B128.apply(0x3f0), 0x3f0 ^ 0x70);
    }
}
