//! The conformance cases: what each kernel of `kernels/conformance_sm90.cu` is launched with, the
//! words it must write (computed here from the formulas of the research note, sections 1.3, 1.4,
//! 1.6 and 1.7, not from the emulator's code), and how an output index reads (for mismatches).

use half::f16;

use super::production;
pub use super::production::{AttnSpec, GemmOp, GemmSpec};

/// Shared-memory regions of every wgmma case (as `WG_A_BYTES` / `WG_B_BYTES` in the kernels).
pub const WG_A_BYTES: usize = 8192;
pub const WG_B_BYTES: usize = 16384;
/// Dynamic shared memory of a wgmma launch.
pub const WG_SMEM: u32 = (WG_A_BYTES + WG_B_BYTES) as u32;

/// One wgmma case (the template arguments of `wg_case` in the kernel file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WgSpec {
    pub n: usize,
    /// K steps of 16 (K = 16 kb).
    pub kb: usize,
    /// Layout codes as in the descriptor: 0 no swizzle, 1 = 128B, 2 = 64B, 3 = 32B.
    pub la: u32,
    pub lboa: u32,
    pub sboa: u32,
    pub lb: u32,
    pub lbob: u32,
    pub sbob: u32,
    /// Operand contents: 0 = B codes / A one-hot, 1 = A codes / B one-hot, 2 = fragment values,
    /// 3 = numerics (no reference).
    pub var: u32,
    pub scale_d: bool,
    pub neg_a: bool,
    /// Bits of the f32 every accumulator holds before the first wgmma.
    pub pre_bits: u32,
    /// Both operands MN-major (imm-trans-a = imm-trans-b = 1; C5).
    pub mn: bool,
    /// f16 accumulators (m64n8k16.f16.f16.f16, N/4 f16x2 words per thread; C7 only).
    pub acc16: bool,
    /// Bytes from the start of the A / B region to where the operand's swizzle pattern starts
    /// (`OFFA` / `OFFB`; C4's base-offset cases put it off the repeat boundary and set the
    /// descriptor's base offset by [`base_offset`]). 0 elsewhere.
    pub offa: usize,
    pub offb: usize,
}

/// One RS wgmma case (`conf_c2_rs_{f16,s8}`): A from registers holding codes, B one-hot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsSpec {
    /// s8 x s8 -> s32 m64n32k32 (else f16 x f16 -> f32 m64n16k16).
    pub s8: bool,
}

/// One int8 case (`conf_c6_*`): m64n32k32, both operands K-major SW128 and byte-code filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int8Spec {
    /// A is u8 (else s8); B is always s8.
    pub a_unsigned: bool,
    /// `.satfinite` over accumulators preset near the s32 limits.
    pub satfinite: bool,
    /// K steps of 32 (start + 32 j).
    pub kb: usize,
}

/// One TMA tile load (`conf_c9_tma_load_{2,3}d`): a u16 tensor whose element at byte offset `o`
/// of its allocation holds `o / 2 + 1` (never 0, so the zero fill of out-of-bounds elements shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmaLoadSpec {
    pub rank: usize,
    /// Elements per dimension, dimension 0 contiguous.
    pub dims: [u64; 3],
    /// Byte strides of dimensions 1 and 2 (>= the packed size: padding is allowed).
    pub strides: [u64; 2],
    pub boxd: [u32; 3],
    /// 0 none, 1 = 32B, 2 = 64B, 3 = 128B (`CUtensorMapSwizzle`).
    pub swizzle: u32,
    pub coords: [i32; 3],
}

/// One TMA tile store (`conf_c10_tma_store_2d`) of box words `0xC0DE0000 + i` into a u32 tensor
/// prefilled with [`STORE_SENTINEL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmaStoreSpec {
    pub dims: [u64; 2],
    pub stride: u64,
    pub boxd: [u32; 2],
    pub coords: [i32; 2],
}

pub const STORE_SENTINEL: u32 = 0xA5A5_A5A5;
/// Dynamic shared memory of the C12 launch (what `%dynamic_smem_size` must read).
pub const C12_DYNAMIC_BYTES: u32 = 2048;
/// The masks of C13, in test order (as `ELECT_MASKS` in the kernel file).
pub const ELECT_MASKS: [u32; 6] = [0xffff_ffff, 0xffff_fff0, 0x0f0f_0f00, 0x8000_0001, 0x0001_0000, 0x7fff_fffe];

/// What a case launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Wgmma(WgSpec),
    TmaLoad(TmaLoadSpec),
    TmaStore(TmaStoreSpec),
    Mbarrier,
    SmemAddresses,
    Elect,
    GridConstant,
    /// C2: A from registers.
    Rs(RsSpec),
    /// C6: s8 / u8 x s8.
    Int8(Int8Spec),
    /// C15: the producer/consumer GEMM ([`GEMM_M`] x [`GEMM_N`] x [`GEMM_K`]).
    Gemm,
    /// C16: a shipped `gemm_sm90` entry through the crate's launch API.
    Sm90Gemm(GemmSpec),
    /// C16: a shipped `attention_sm90_*` entry through [`crate::attention_sm90()`].
    Sm90Attention(AttnSpec),
    /// C17: thread block clusters: distributed shared memory and `barrier.cluster`
    /// ([`C17_CTAS`] CTAs of 64 threads in clusters of 4).
    Cluster,
}

/// C17's grid: two clusters of 4 CTAs.
pub const C17_CTAS: u32 = 8;

/// One conformance case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// File name of its words (`<name>.bin`) and its name in `conformance.json`.
    pub name: &'static str,
    pub kernel: &'static str,
    /// What it pins down (research note 2.3).
    pub pins: &'static str,
    pub kind: Kind,
}

// One row of the wgmma case table: positional on purpose, the table reads as columns.
#[allow(clippy::too_many_arguments)]
const fn wg(n: usize, kb: usize, la: u32, lboa: u32, sboa: u32, lb: u32, lbob: u32, sbob: u32, var: u32) -> WgSpec {
    WgSpec {
        n,
        kb,
        la,
        lboa,
        sboa,
        lb,
        lbob,
        sbob,
        var,
        scale_d: true,
        neg_a: false,
        pre_bits: 0,
        mn: false,
        acc16: false,
        offa: 0,
        offb: 0,
    }
}

const fn load2(dims: [u64; 2], stride: u64, boxd: [u32; 2], swizzle: u32, coords: [i32; 2]) -> TmaLoadSpec {
    TmaLoadSpec {
        rank: 2,
        dims: [dims[0], dims[1], 1],
        strides: [stride, stride * dims[1]],
        boxd: [boxd[0], boxd[1], 1],
        swizzle,
        coords: [coords[0], coords[1], 0],
    }
}

/// An MN-major (C5) row: both operands with the same layout, LBO and SBO, K = 32 in 2 steps, B
/// code-filled, A one-hot.
const fn mn(n: usize, layout: u32, lbo: u32, sbo: u32) -> WgSpec {
    WgSpec { mn: true, ..wg(n, 2, layout, lbo, sbo, layout, lbo, sbo, 0) }
}

/// Every case, in priority order (the note's C1, C3, C4, C9, C10, C11, C12, C13, C14, C8, C7,
/// then C2, C5, C6, C7 with f16 accumulators, C15, then C16: the shipped kernels, see
/// [`super::production`]; then C17, clusters).
pub fn all() -> Vec<Case> {
    let frag = wg(8, 1, 0, 128, 256, 0, 128, 256, 2);
    let c = |name, kernel, pins, kind| Case { name, kernel, pins, kind };
    vec![
        c("c1_frag_n8", "conf_c1_frag_n8", "wgmma D fragment (m64n8k16 f32): d[i] of thread t -> (m, n)", Kind::Wgmma(frag)),
        c("c1_frag_n64", "conf_c1_frag_n64", "wgmma D fragment, N = 64", Kind::Wgmma(WgSpec { n: 64, ..frag })),
        c("c1_frag_n256", "conf_c1_frag_n256", "wgmma D fragment, N = 256", Kind::Wgmma(WgSpec { n: 256, ..frag })),
        c(
            "c1_frag_f16acc_n8",
            "conf_c1_frag_f16acc_n8",
            "wgmma f16-accumulator D fragment (m64n8k16.f16): low/high half of d[j] of thread t -> (m, n), (m, n + 1)",
            Kind::Wgmma(WgSpec { acc16: true, ..frag }),
        ),
        c(
            "c3_kmajor_b_lbo128_sbo1024",
            "conf_c3_kmajor_b_lbo128_sbo1024",
            "K-major no-swizzle address function of B (LBO 128 < SBO 1024), K = 64 in 4 steps of 2 LBO",
            Kind::Wgmma(wg(32, 4, 0, 128, 1024, 0, 128, 1024, 0)),
        ),
        c(
            "c3_kmajor_b_lbo512_sbo128",
            "conf_c3_kmajor_b_lbo512_sbo128",
            "K-major no-swizzle address function of B with the roles swapped (LBO 512 > SBO 128)",
            Kind::Wgmma(wg(32, 4, 0, 128, 1024, 0, 512, 128, 0)),
        ),
        c(
            "c3_kmajor_a_lbo1024_sbo128",
            "conf_c3_kmajor_a_lbo1024_sbo128",
            "K-major no-swizzle address function of A (LBO 1024, SBO 128)",
            Kind::Wgmma(wg(64, 4, 0, 1024, 128, 0, 128, 1024, 1)),
        ),
        c(
            "c4_sw128_b",
            "conf_c4_sw128_b",
            "128B swizzle of B (XOR on absolute address bits), K advanced by start + 32 j",
            Kind::Wgmma(wg(32, 4, 1, 16, 1024, 1, 16, 1024, 0)),
        ),
        c("c4_sw64_b", "conf_c4_sw64_b", "64B swizzle of B, start + 32 j", Kind::Wgmma(wg(32, 2, 2, 16, 512, 2, 16, 512, 0))),
        c("c4_sw32_b", "conf_c4_sw32_b", "32B swizzle of B", Kind::Wgmma(wg(32, 1, 3, 16, 256, 3, 16, 256, 0))),
        c("c4_sw128_a", "conf_c4_sw128_a", "128B swizzle of A, start + 32 j", Kind::Wgmma(wg(64, 4, 1, 16, 1024, 1, 16, 1024, 1))),
        c(
            "c4_sw128_base_offset",
            "conf_c4_sw128_base_offset",
            "128B swizzle of B starting 384 B past the 1024 B repeat: descriptor base offset 3 (ISA), absolute-address XOR, start + 32 j",
            Kind::Wgmma(WgSpec { offb: 384, ..wg(32, 4, 1, 16, 1024, 1, 16, 1024, 0) }),
        ),
        c(
            "c4_sw64_base_offset",
            "conf_c4_sw64_base_offset",
            "64B swizzle, A at +256 and B at +384 of the 512 B repeat: base offsets 2 and 3 (ISA), start + 32 j",
            Kind::Wgmma(WgSpec { offa: 256, offb: 384, ..wg(32, 2, 2, 16, 512, 2, 16, 512, 0) }),
        ),
        c(
            "c4_sw32_base_offset",
            "conf_c4_sw32_base_offset",
            "32B swizzle of A (code-filled) starting 128 B past the 256 B repeat: base offset 1 (ISA)",
            Kind::Wgmma(WgSpec { offa: 128, ..wg(32, 1, 3, 16, 256, 3, 16, 256, 1) }),
        ),
        c(
            "c9_load_2d_none",
            "conf_c9_tma_load_2d",
            "TMA 2D tile load, no swizzle, negative coordinates (zero fill), full-box complete_tx",
            Kind::TmaLoad(load2([40, 20], 80, [16, 8], 0, [-3, -2])),
        ),
        c(
            "c9_load_2d_sw32",
            "conf_c9_tma_load_2d",
            "TMA 2D load, 32B swizzle, past-end coordinates in both dimensions",
            Kind::TmaLoad(load2([40, 20], 80, [16, 8], 1, [30, 15])),
        ),
        c(
            "c9_load_2d_sw64",
            "conf_c9_tma_load_2d",
            "TMA 2D load, 64B swizzle, negative x",
            Kind::TmaLoad(load2([40, 20], 80, [32, 8], 2, [-5, 3])),
        ),
        c(
            "c9_load_2d_sw128_padded",
            "conf_c9_tma_load_2d",
            "TMA 2D load, 128B swizzle, padded row stride (96 B for 40 u16), box wider than the tensor",
            Kind::TmaLoad(load2([40, 20], 96, [64, 8], 3, [-20, 14])),
        ),
        c(
            "c9_load_3d_none",
            "conf_c9_tma_load_3d",
            "TMA 3D load, no swizzle, negative x, past-end z",
            Kind::TmaLoad(TmaLoadSpec {
                rank: 3,
                dims: [24, 6, 4],
                strides: [48, 288],
                boxd: [8, 4, 2],
                swizzle: 0,
                coords: [-4, 3, 3],
            }),
        ),
        c(
            "c9_load_3d_sw128",
            "conf_c9_tma_load_3d",
            "TMA 3D load, 128B swizzle, negative z",
            Kind::TmaLoad(TmaLoadSpec {
                rank: 3,
                dims: [72, 6, 4],
                strides: [144, 864],
                boxd: [64, 2, 2],
                swizzle: 3,
                coords: [-8, 5, -1],
            }),
        ),
        c(
            "c10_store_2d_tail",
            "conf_c10_tma_store_2d",
            "TMA store clipping at the far ends (only in-bounds elements written over a sentinel)",
            Kind::TmaStore(TmaStoreSpec { dims: [20, 12], stride: 80, boxd: [8, 8], coords: [16, 8] }),
        ),
        c(
            "c10_store_2d_negative",
            "conf_c10_tma_store_2d",
            "TMA store clipping at negative coordinates",
            Kind::TmaStore(TmaStoreSpec { dims: [20, 12], stride: 80, boxd: [8, 8], coords: [-4, -3] }),
        ),
        c(
            "c11_mbarrier",
            "conf_c11_mbarrier",
            "mbarrier state machine: parities over 5 phases, counts, expect_tx/complete_tx (bytes before expect), tokens, noComplete",
            Kind::Mbarrier,
        ),
        c(
            "c12_smem_addresses",
            "conf_c12_smem_addresses",
            "shared addresses: static vs .align 1024 dynamic, %dynamic_smem_size, %total_smem_size, generic low bits",
            Kind::SmemAddresses,
        ),
        c("c13_elect_sync", "conf_c13_elect_sync", "elect.sync: which member lane is elected under 6 masks", Kind::Elect),
        c(
            "c14_grid_constant",
            "conf_c14_grid_constant",
            "__grid_constant__ struct read through its parameter address (cvta.param), padding included",
            Kind::GridConstant,
        ),
        c(
            "c8_scale_d0_neg_a",
            "conf_c8_scale_d0_neg_a",
            "scale-d = 0 ignores the accumulator (1000.0); imm-scale-a = -1 negates",
            Kind::Wgmma(WgSpec { scale_d: false, neg_a: true, pre_bits: 0x447a_0000, ..frag }),
        ),
        c(
            "c8_accumulate",
            "conf_c8_accumulate",
            "scale-d = 1 adds the accumulator (0.5)",
            Kind::Wgmma(WgSpec { pre_bits: 0x3f00_0000, ..frag }),
        ),
        c(
            "c7_numerics_n8",
            "conf_c7_numerics_n8",
            "f32 accumulation of 15 f16 products around one ulp of +-1.0, subnormal products (bits recorded, no reference)",
            Kind::Wgmma(WgSpec { var: 3, ..frag }),
        ),
        c(
            "c2_rs_f16",
            "conf_c2_rs_f16",
            "RS wgmma A-register fragment (m64n16k16 f16): half h of a[j] of thread t -> (m, k)",
            Kind::Rs(RsSpec { s8: false }),
        ),
        c(
            "c2_rs_s8",
            "conf_c2_rs_s8",
            "RS wgmma A-register fragment (m64n32k32 s8): byte b of a[j] of thread t -> (m, k)",
            Kind::Rs(RsSpec { s8: true }),
        ),
        c(
            "c5_mn_none",
            "conf_c5_mn_none",
            "MN-major (imm-trans = 1) INTERLEAVE: SBO strides 8-element M/N groups, LBO 8-row K groups (LBO 128, SBO 512)",
            Kind::Wgmma(mn(32, 0, 128, 512)),
        ),
        c(
            "c5_mn_none_swapped",
            "conf_c5_mn_none_swapped",
            "MN-major INTERLEAVE with the strides swapped (LBO 1024, SBO 128)",
            Kind::Wgmma(mn(32, 0, 1024, 128)),
        ),
        c(
            "c5_mn_sw32",
            "conf_c5_mn_sw32",
            "MN-major 32B swizzle: LBO strides 32-byte M/N chunks (1024), SBO 8-row K groups (256), K step 2 SBO",
            Kind::Wgmma(mn(32, 3, 1024, 256)),
        ),
        c(
            "c5_mn_sw64",
            "conf_c5_mn_sw64",
            "MN-major 64B swizzle, LBO 512 < SBO 1024 (chunks interleaved with K groups)",
            Kind::Wgmma(mn(64, 2, 512, 1024)),
        ),
        c(
            "c5_mn_sw128",
            "conf_c5_mn_sw128",
            "MN-major 128B swizzle, N = 128 (two 64-element chunks, LBO 4096), SBO 1024",
            Kind::Wgmma(mn(128, 1, 4096, 1024)),
        ),
        c(
            "c6_s8s8_sw128",
            "conf_c6_s8s8_sw128",
            "s8 x s8 -> s32 m64n32k32, K-major 128B swizzle of bytes, start + 32 j (K = 64)",
            Kind::Int8(Int8Spec { a_unsigned: false, satfinite: false, kb: 2 }),
        ),
        c(
            "c6_u8s8_sw128",
            "conf_c6_u8s8_sw128",
            "u8 x s8 -> s32 m64n32k32 (A unsigned), K = 64",
            Kind::Int8(Int8Spec { a_unsigned: true, satfinite: false, kb: 2 }),
        ),
        c(
            "c6_s8s8_satfinite",
            "conf_c6_s8s8_satfinite",
            ".satfinite: accumulators preset to +-(2^31 - 256) overflow both ways and clamp to the s32 limits",
            Kind::Int8(Int8Spec { a_unsigned: false, satfinite: true, kb: 1 }),
        ),
        c(
            "c7_numerics_f16acc_n8",
            "conf_c7_numerics_f16acc_n8",
            "C7's products with f16 accumulators (m64n8k16.f16.f16.f16; bits recorded, no reference)",
            Kind::Wgmma(WgSpec { var: 3, acc16: true, ..frag }),
        ),
        c(
            "c15_ws_gemm",
            "conf_c15_ws_gemm",
            "producer/consumer GEMM 128x128x256: TMA producer warpgroup, 2 consumer warpgroups, 2-stage full/empty mbarrier ring, setmaxnreg 40/232, no hang",
            Kind::Gemm,
        ),
        c(
            "c16_gemm_int8_i32",
            "gemm_int8_i32_sm90",
            "shipped Hopper int8 GEMM, raw s32, M 70 x N 136 x K 160 (ragged tiles, K 1.25 stages), one CTA walking both tiles: exact",
            Kind::Sm90Gemm(GemmSpec { op: GemmOp::Int8I32, m: 70, n: 136, k: 160, ctas: Some(1), seed: 161 }),
        ),
        c(
            "c16_gemm_int8_f16",
            "gemm_int8_sm90",
            "shipped W8A8 GEMM, fp16 out, zero points, power-of-two scales, bias, 70 x 136 x 80: every output an exact fp16",
            Kind::Sm90Gemm(GemmSpec { op: GemmOp::Int8F16, m: 70, n: 136, k: 80, ctas: None, seed: 162 }),
        ),
        c(
            "c16_gemm_f16",
            "gemm_f16_sm90",
            "shipped fp16 GEMM + bias, 70 x 136 x 80 (K 1.25 stages): within f32 accumulation + one fp16 rounding of f64",
            Kind::Sm90Gemm(GemmSpec { op: GemmOp::F16, m: 70, n: 136, k: 80, ctas: None, seed: 163 }),
        ),
        c(
            "c16_gemm_f16_ln",
            "gemm_f16_sm90_ln",
            "shipped fp16 GEMM with the layernorm fused, 70 x 136 x 160: out as c16_gemm_f16, ln.out within bound of LN(out)",
            Kind::Sm90Gemm(GemmSpec { op: GemmOp::F16Ln, m: 70, n: 136, k: 160, ctas: None, seed: 164 }),
        ),
        c(
            "c16_attn_d64_packed",
            "attention_sm90_packed_d64",
            "shipped Hopper attention, packed tiling, sequences 19 + 5, 2 heads of 64: within the f16-P bound of f64",
            Kind::Sm90Attention(AttnSpec { seqlens: [19, 5], heads: 2, head_dim: 64, packed: true, seed: 165 }),
        ),
        c(
            "c16_attn_d64_perseq",
            "attention_sm90_d64",
            "shipped Hopper attention, per-sequence tiling, sequences 19 + 5, 2 heads of 64",
            Kind::Sm90Attention(AttnSpec { seqlens: [19, 5], heads: 2, head_dim: 64, packed: false, seed: 165 }),
        ),
        c(
            "c16_attn_d32_packed",
            "attention_sm90_packed_d32",
            "shipped Hopper attention, packed tiling, sequences 5 + 19, 2 heads of 32",
            Kind::Sm90Attention(AttnSpec { seqlens: [5, 19], heads: 2, head_dim: 32, packed: true, seed: 166 }),
        ),
        c(
            "c16_attn_d32_perseq",
            "attention_sm90_d32",
            "shipped Hopper attention, per-sequence tiling, sequences 5 + 19, 2 heads of 32",
            Kind::Sm90Attention(AttnSpec { seqlens: [5, 19], heads: 2, head_dim: 32, packed: false, seed: 166 }),
        ),
        c(
            "c17_cluster_dsmem",
            "conf_c17_cluster",
            "thread block clusters of 4: cluster special registers, mapa + ld/st.shared::cluster to peer CTAs, barrier.cluster.arrive.release / wait.acquire (what the _cln GEMMs rely on)",
            Kind::Cluster,
        ),
    ]
}

/// The case with this name.
pub fn find(name: &str) -> Option<Case> {
    all().into_iter().find(|c| c.name == name)
}

/// Number of 32-bit words a case writes.
pub fn words(kind: &Kind) -> usize {
    match kind {
        Kind::Wgmma(s) => 128 * s.n / if s.acc16 { 4 } else { 2 },
        Kind::Rs(s) => 128 * if s.s8 { 16 } else { 8 },
        Kind::Int8(_) => 128 * 16,
        Kind::Gemm => GEMM_M * GEMM_N + 1,
        Kind::TmaLoad(s) => 1 + tma_box_bytes(s) / 4,
        Kind::TmaStore(s) => (s.stride / 4 * s.dims[1]) as usize,
        Kind::Mbarrier => 32,
        Kind::SmemAddresses => 8,
        Kind::Elect => 32 * ELECT_MASKS.len(),
        Kind::GridConstant => GRID_CONSTANT_BYTES / 4,
        Kind::Sm90Gemm(s) => production::gemm_words(s),
        Kind::Sm90Attention(s) => production::attn_words(s),
        Kind::Cluster => C17_CTAS as usize * (64 * 3 + 4),
    }
}

/// C17's words (see `conf_c17_cluster`): per CTA b (cluster b / 4, rank b % 4) and thread t,
/// its right neighbour's `mine[t]`, its left neighbour's `mine[63 - t]`, what the CTA two ranks
/// away stored into its `theirs[t]`; then per CTA rank, cluster size, cluster, clusters.
fn cluster_reference() -> Vec<u32> {
    let mine = |c: u32, r: u32, t: u32| 0x10000 * c + 0x100 * r + t;
    let mut w = vec![0u32; words(&Kind::Cluster)];
    for b in 0..C17_CTAS {
        let (c, r) = (b / 4, b % 4);
        for t in 0..64 {
            let o = 3 * (64 * b + t) as usize;
            w[o] = mine(c, (r + 1) % 4, t);
            w[o + 1] = mine(c, (r + 3) % 4, 63 - t);
            w[o + 2] = 0x20000 * c + 0x100 * ((r + 2) % 4) + t;
        }
        let h = 1536 + 4 * b as usize;
        w[h..h + 4].copy_from_slice(&[r, 4, c, C17_CTAS / 4]);
    }
    w
}

pub fn tma_box_bytes(s: &TmaLoadSpec) -> usize {
    2 * (0..s.rank).map(|d| s.boxd[d] as usize).product::<usize>()
}

/// Allocation bytes of a TMA load's tensor.
pub fn tma_load_alloc_bytes(s: &TmaLoadSpec) -> usize {
    (s.strides[s.rank - 2] * s.dims[s.rank - 1]) as usize
}

/// The u16 contents of a TMA load's tensor (element at byte offset o holds o/2 + 1).
pub fn tma_load_source(s: &TmaLoadSpec) -> Vec<u16> {
    (0..tma_load_alloc_bytes(s) / 2).map(|i| (i + 1) as u16).collect()
}

// ---------------------------------------------------------------------------------------------
// The research note's formulas (1.3 address functions, 1.4 fragments, 1.6 TMA), written anew.
// ---------------------------------------------------------------------------------------------

/// XOR swizzle of an absolute shared address: the 16-byte chunk index (bits 4..6) ^= the 128-byte
/// row index (bits 7..9) modulo 8 / 4 / 2 for 128 / 64 / 32 B; identity without swizzle.
/// `width` is the swizzle span in bytes (0 = none).
pub fn swizzle(addr: usize, width: usize) -> usize {
    let mask = match width {
        128 => 7,
        64 => 3,
        32 => 1,
        _ => 0,
    };
    addr ^ (((addr >> 7) & mask) << 4)
}

/// Span in bytes of a descriptor layout code (0 none, 1 = 128B, 2 = 64B, 3 = 32B).
fn desc_width(layout: u32) -> usize {
    match layout {
        1 => 128,
        2 => 64,
        3 => 32,
        _ => 0,
    }
}

/// The base offset (descriptor bits 49-51) of a swizzle pattern starting at absolute shared
/// address `pattern`, by PTX ISA 9.7.15.5.1.2.2 "Matrix Descriptor Format": 0 when the pattern
/// starts on its repeat boundary (1024 / 512 / 256 B for 128 / 64 / 32B swizzle), otherwise
/// `(pattern start addr >> 0x7) & 0x7`; 0 without swizzle (the field is not valid there).
pub fn base_offset(pattern: usize, layout: u32) -> u32 {
    let w = desc_width(layout);
    if w == 0 || pattern % (8 * w) == 0 {
        0
    } else {
        ((pattern >> 7) & 7) as u32
    }
}

/// Byte address that a K-major f16 descriptor (start, LBO, SBO, layout) gives element (r, k),
/// k < 16, of one wgmma: INTERLEAVE `start + (r/8) SBO + (r%8) 16 + (k/8) LBO + (k%8) 2`,
/// swizzled `swz(start + (r/8) SBO + (r%8) W + 2k)` (LBO unused).
pub fn desc_addr(start: usize, lbo: usize, sbo: usize, layout: u32, r: usize, k: usize) -> usize {
    let w = desc_width(layout);
    if w == 0 {
        start + (r / 8) * sbo + (r % 8) * 16 + (k / 8) * lbo + (k % 8) * 2
    } else {
        swizzle(start + (r / 8) * sbo + (r % 8) * w + 2 * k, w)
    }
}

/// Start address of K step j: two 8-element core columns (2 LBO) without swizzle, 32 bytes
/// inside the swizzled row otherwise (CUTLASS DescriptorIterator, TK chunk_descriptor).
fn step_start(base: usize, layout: u32, lbo: usize, j: usize) -> usize {
    if layout == 0 {
        base + j * 2 * lbo
    } else {
        base + 32 * j
    }
}

/// Byte address that an MN-major f16 descriptor (imm-trans = 1) gives element (r, k), k < 16, of
/// one wgmma (note 1.3, CUTLASS `make_gmma_desc<Major::MN>`): INTERLEAVE
/// `start + (r/8) SBO + (k/8) LBO + (k%8) 16 + (r%8) 2`; swizzled, with C = W/2 elements per
/// W-byte chunk, `swz(start + (r/C) LBO + (k/8) SBO + (k%8) W + (r%C) 2)`: LBO strides the chunks
/// along M/N and SBO the 8-row K groups, the reverse of the INTERLEAVE roles.
pub fn desc_addr_mn(start: usize, lbo: usize, sbo: usize, layout: u32, r: usize, k: usize) -> usize {
    let w = desc_width(layout);
    if w == 0 {
        start + (r / 8) * sbo + (k / 8) * lbo + (k % 8) * 16 + (r % 8) * 2
    } else {
        let c = w / 2;
        swizzle(start + (r / c) * lbo + (k / 8) * sbo + (k % 8) * w + (r % c) * 2, w)
    }
}

/// Start address of K step j of an MN-major operand: 16 K rows = two 8-row K groups, 2 LBO
/// without swizzle, 2 SBO with.
fn step_start_mn(base: usize, layout: u32, lbo: usize, sbo: usize, j: usize) -> usize {
    if layout == 0 {
        base + j * 2 * lbo
    } else {
        base + j * 2 * sbo
    }
}

/// Address of element (r, k) of K step j of a wgmma operand, K-major or MN-major.
#[allow(clippy::too_many_arguments)]
fn operand_addr(mn: bool, base: usize, layout: u32, lbo: u32, sbo: u32, j: usize, r: usize, k: usize) -> usize {
    let (lbo, sbo) = (lbo as usize, sbo as usize);
    if mn {
        desc_addr_mn(step_start_mn(base, layout, lbo, sbo, j), lbo, sbo, layout, r, k)
    } else {
        desc_addr(step_start(base, layout, lbo, j), lbo, sbo, layout, r, k)
    }
}

/// (m, n) held by accumulator `i` of warpgroup thread `t` (f32 D fragment, note 1.4).
pub fn d_fragment(t: usize, i: usize) -> (usize, usize) {
    let (w, l) = (t / 32, t % 32);
    let (g, q) = (l >> 2, l & 3);
    (16 * w + g + 8 * ((i >> 1) & 1), 8 * (i >> 2) + 2 * q + (i & 1))
}

/// The f16 code of slot s of a code-filled region: bits 0x0400 + s.
fn code(s: usize) -> u16 {
    (0x0400 + s) as u16
}

/// The shared-memory image (f16 slots) the wgmma kernel builds before its first wgmma; byte
/// address = 2 x slot, relative to the 1024-aligned dynamic buffer.
pub fn wg_image(s: &WgSpec) -> Vec<u16> {
    let mut img = vec![0u16; (WG_A_BYTES + WG_B_BYTES) / 2];
    // the operands' pattern starts; the code fills cover the whole regions
    let (a0, b0) = (s.offa, WG_A_BYTES + s.offb);
    let k_total = 16 * s.kb;
    let one = f16::from_f32(1.0).to_bits();
    // the kernel's writes go through the same formula as the reads (element (r, k) of K step
    // k/16 at the step's start): the write side is the note's "k*e" form for swizzled rows
    let at = |layout: u32, lbo: u32, sbo: u32, base: usize, r: usize, k: usize| {
        operand_addr(s.mn, base, layout, lbo, sbo, k / 16, r, k % 16)
    };
    let mut put = |addr: usize, v: u16| img[addr / 2] = v;
    match s.var {
        0 => {
            for slot in 0..WG_B_BYTES / 2 {
                put(WG_A_BYTES + 2 * slot, code(slot));
            }
            for m in 0..64 {
                put(at(s.la, s.lboa, s.sboa, a0, m, m % k_total), one);
            }
        }
        1 => {
            for slot in 0..WG_A_BYTES / 2 {
                put(2 * slot, code(slot));
            }
            for n in 0..s.n {
                put(at(s.lb, s.lbob, s.sbob, b0, n, n % k_total), one);
            }
        }
        2 => {
            for m in 0..64 {
                put(at(s.la, s.lboa, s.sboa, a0, m, 0), f16::from_f32((m + 1) as f32).to_bits());
                put(at(s.la, s.lboa, s.sboa, a0, m, 1), one);
            }
            for n in 0..s.n {
                put(at(s.lb, s.lbob, s.sbob, b0, n, 0), one);
                put(at(s.lb, s.lbob, s.sbob, b0, n, 1), f16::from_f32(128.0 * n as f32).to_bits());
            }
        }
        _ => {}
    }
    img
}

/// The words a wgmma case must write, or `None` for C7 (numerics: no reference). Exact: every
/// D is a sum of at most two nonzero products of small integers or one code times 1.0. The
/// reads, like the kernel's writes, swizzle the absolute address (the buffer is 1024-aligned, so
/// its offsets swizzle as the absolute addresses do), wherever the pattern starts.
pub fn wg_reference(s: &WgSpec) -> Option<Vec<u32>> {
    wg_reference_with(s, operand_addr)
}

/// [`wg_reference`] with another read-side address function (the unit tests' misreadings); the
/// shared-memory image stays the kernel's.
fn wg_reference_with(
    s: &WgSpec,
    read: impl Fn(bool, usize, u32, u32, u32, usize, usize, usize) -> usize,
) -> Option<Vec<u32>> {
    if s.var == 3 {
        return None;
    }
    let img = wg_image(s);
    let val = |addr: usize| f16::from_bits(img[addr / 2]).to_f64();
    let (a0, b0) = (s.offa, WG_A_BYTES + s.offb);
    let operand_addr = read;
    let sign = if s.neg_a { -1.0 } else { 1.0 };
    let d = |m: usize, n: usize| {
        // f16 accumulators start at zero (the kernel ignores PRE_BITS for them)
        let mut acc = if s.scale_d && !s.acc16 { f32::from_bits(s.pre_bits) as f64 } else { 0.0 };
        for j in 0..s.kb {
            for k in 0..16 {
                let a = val(operand_addr(s.mn, a0, s.la, s.lboa, s.sboa, j, m, k));
                let b = val(operand_addr(s.mn, b0, s.lb, s.lbob, s.sbob, j, n, k));
                acc += sign * a * b;
            }
        }
        acc
    };
    if s.acc16 {
        // exact in f16 too (C1's fragment values stay below 2048)
        let mut out = vec![0u32; 128 * s.n / 4];
        for t in 0..128 {
            for j in 0..s.n / 4 {
                let (m, n) = d16_fragment(t, j);
                let (lo, hi) = (f16::from_f64(d(m, n)).to_bits(), f16::from_f64(d(m, n + 1)).to_bits());
                out[t * s.n / 4 + j] = lo as u32 | (hi as u32) << 16;
            }
        }
        return Some(out);
    }
    let mut out = vec![0u32; 128 * s.n / 2];
    for t in 0..128 {
        for i in 0..s.n / 2 {
            let (m, n) = d_fragment(t, i);
            out[t * s.n / 2 + i] = (d(m, n) as f32).to_bits();
        }
    }
    Some(out)
}

/// (m, n) of the low half of f16x2 accumulator `j` of warpgroup thread `t` (f16 D fragment,
/// note 1.4: `m = 16w + g + 8 (j&1)`, `n = 8 (j>>1) + 2q`; the high half is column n + 1).
pub fn d16_fragment(t: usize, j: usize) -> (usize, usize) {
    let (w, l) = (t / 32, t % 32);
    (16 * w + (l >> 2) + 8 * (j & 1), 8 * (j >> 1) + 2 * (l & 3))
}

/// (m, k) held by element `e` (f16: half e; s8: byte e) of A register `j` of warpgroup thread `t`
/// in an RS wgmma (note 1.4; the mma.sync m16n8k16 / m16n8k32 A fragments stacked at rows 16 w).
pub fn a_fragment(t: usize, j: usize, e: usize, s8: bool) -> (usize, usize) {
    let (w, l) = (t / 32, t % 32);
    let (g, q) = (l >> 2, l & 3);
    let m = 16 * w + g + 8 * (j & 1);
    let k = if s8 { 16 * (j >> 1) + 4 * q + e } else { 8 * (j >> 1) + 2 * q + e };
    (m, k)
}

/// C2's s8 code of register slot s = 16 t + 4 j + b (as `C2_CODE8` in the kernel file).
pub fn c2_code8(s: usize) -> i8 {
    ((s / 16 + 37 * (s % 16)) & 0xff) as u8 as i8
}

/// The words of an RS case: the A tile from the register fragment (thread t's slot codes placed at
/// their (m, k)), B one-hot, `B[k][n] = (k == n)`, so D(m, n) = A(m, n) at the D fragment's places.
pub fn rs_reference(s: &RsSpec) -> Vec<u32> {
    rs_reference_with(s, a_fragment)
}

/// [`rs_reference`] with another A fragment (the unit tests' wrong ones).
fn rs_reference_with(s: &RsSpec, a_fragment: impl Fn(usize, usize, usize, bool) -> (usize, usize)) -> Vec<u32> {
    let (n_cols, per_reg) = if s.s8 { (32, 4) } else { (16, 2) };
    let mut a = vec![vec![0f64; n_cols]; 64];
    for t in 0..128 {
        for j in 0..4 {
            for e in 0..per_reg {
                let (m, k) = a_fragment(t, j, e, s.s8);
                a[m][k] = if s.s8 {
                    c2_code8(16 * t + 4 * j + e) as f64
                } else {
                    f16::from_bits(code(8 * t + 2 * j + e)).to_f64()
                };
            }
        }
    }
    let mut out = vec![0u32; 128 * n_cols / 2];
    for t in 0..128 {
        for i in 0..n_cols / 2 {
            let (m, n) = d_fragment(t, i);
            let d = a[m][n];
            out[t * n_cols / 2 + i] = if s.s8 { d as i32 as u32 } else { (d as f32).to_bits() };
        }
    }
    out
}

/// C6's byte codes at offset `s` of the A and of the B region (`C6_CODE_A` / `C6_CODE_B`).
pub fn c6_code_a(s: usize) -> u8 {
    ((s * 13 + (s >> 8) * 7 + 1) & 0xff) as u8
}
pub fn c6_code_b(s: usize) -> u8 {
    ((s * 29 + (s >> 7) * 5 + 3) & 0xff) as u8
}

/// Accumulator preset of d[i] in the `.satfinite` case: 2^31 - 256 (even i), -(2^31 - 256) (odd i).
fn c6_preset(i: usize) -> i64 {
    if i & 1 == 1 {
        -(0x7fff_ff00i64)
    } else {
        0x7fff_ff00
    }
}

/// The words of an int8 case: element (r, k) of K step j of either operand is the byte at
/// `swz128(32 j + (r/8) 1024 + (r%8) 128 + k)` of its region (note 1.3, K-major SW128 with 1-byte
/// elements: a row is 128 elements, LBO unused); D = sum over the steps of the exact products, A
/// as u8 or s8, B as s8. `.satfinite` (PTX ISA, wgmma.mma_async "Integer" form: the s32 result is
/// saturated to [MIN_INT32, MAX_INT32] instead of wrapping) clamps each instruction's result;
/// with one K step here that is clamp(preset + A.B).
pub fn int8_reference(s: &Int8Spec) -> Vec<u32> {
    // both regions start on the 1024-byte swizzle repeat (A at 0, B at 8 KiB)
    let addr = |j: usize, r: usize, k: usize| swizzle(32 * j + (r / 8) * 1024 + (r % 8) * 128 + k, 128);
    let mut out = vec![0u32; 128 * 16];
    for t in 0..128 {
        for i in 0..16 {
            let (m, n) = d_fragment(t, i);
            let mut acc: i64 = if s.satfinite { c6_preset(i) } else { 0 };
            for j in 0..s.kb {
                for k in 0..32 {
                    let ab = c6_code_a(addr(j, m, k));
                    let a = if s.a_unsigned { ab as i64 } else { ab as i8 as i64 };
                    let b = c6_code_b(addr(j, n, k)) as i8 as i64;
                    acc += a * b;
                }
                if s.satfinite {
                    acc = acc.clamp(i32::MIN as i64, i32::MAX as i64);
                }
            }
            out[t * 16 + i] = acc as i32 as u32;
        }
    }
    out
}

/// C15's GEMM shape (`conf_c15_ws_gemm`: one 128 x 128 tile, 4 k-blocks of 64).
pub const GEMM_M: usize = 128;
pub const GEMM_N: usize = 128;
pub const GEMM_K: usize = 256;
/// Dynamic shared memory of the C15 launch: 2 stages of (A box 128 x 64 + W box 128 x 64) f16.
pub const GEMM_SMEM: u32 = 2 * 32768;

/// C15's `A[m][k]` = (m + 2k) mod 7 - 3 (f16, row-major, K contiguous).
pub fn gemm_a() -> Vec<f16> {
    (0..GEMM_M * GEMM_K).map(|i| f16::from_f32(((i / GEMM_K + 2 * (i % GEMM_K)) % 7) as f32 - 3.0)).collect()
}

/// C15's `W[n][k]` = (3n + k) mod 5 - 2 (f16, row-major, K contiguous; D = A W^T).
pub fn gemm_w() -> Vec<f16> {
    (0..GEMM_N * GEMM_K).map(|i| f16::from_f32(((3 * (i / GEMM_K) + i % GEMM_K) % 5) as f32 - 2.0)).collect()
}

/// C15's words: D = A W^T row-major (an exact integer matmul: |D| <= 256 * 3 * 2, every partial
/// sum exact in f32), then 0 (no bounded wait gave up).
pub fn gemm_reference() -> Vec<u32> {
    let (a, w) = (gemm_a(), gemm_w());
    let mut out = Vec::with_capacity(GEMM_M * GEMM_N + 1);
    for m in 0..GEMM_M {
        for n in 0..GEMM_N {
            let d: i64 =
                (0..GEMM_K).map(|k| a[m * GEMM_K + k].to_f32() as i64 * w[n * GEMM_K + k].to_f32() as i64).sum();
            out.push((d as f32).to_bits());
        }
    }
    out.push(0);
    out
}

/// The words a TMA load case must write: [1 (phase completed), the box as TMA leaves it in
/// shared memory]: element i lands at swz(lin(i)), lin = 2 (i0 + n0 (i1 + n1 i2)), and holds the
/// tensor's element at coords + i when every coordinate is in bounds, else 0.
pub fn tma_load_reference(s: &TmaLoadSpec) -> Vec<u32> {
    let src = tma_load_source(s);
    let bytes = tma_box_bytes(s);
    let width = match s.swizzle {
        1 => 32,
        2 => 64,
        3 => 128,
        _ => 0,
    };
    let mut smem = vec![0u8; bytes];
    let (n0, n1, n2) = (s.boxd[0] as usize, s.boxd[1] as usize, if s.rank == 3 { s.boxd[2] as usize } else { 1 });
    for i2 in 0..n2 {
        for i1 in 0..n1 {
            for i0 in 0..n0 {
                let c =
                    [s.coords[0] as i64 + i0 as i64, s.coords[1] as i64 + i1 as i64, s.coords[2] as i64 + i2 as i64];
                let inb = (0..s.rank).all(|d| c[d] >= 0 && (c[d] as u64) < s.dims[d]);
                let v = if inb {
                    let mut off = c[0] as u64 * 2 + c[1] as u64 * s.strides[0];
                    if s.rank == 3 {
                        off += c[2] as u64 * s.strides[1];
                    }
                    src[off as usize / 2]
                } else {
                    0
                };
                let lin = 2 * (i0 + n0 * (i1 + n1 * i2));
                let a = swizzle(lin, width);
                smem[a..a + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    let mut out = vec![1u32];
    out.extend(smem.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
    out
}

/// The tensor after a TMA store case: box element (i0, i1) = 0xC0DE0000 + i0 + n0 i1 where
/// coords + i is in bounds, the sentinel everywhere else.
pub fn tma_store_reference(s: &TmaStoreSpec) -> Vec<u32> {
    let row_words = (s.stride / 4) as usize;
    let mut out = vec![STORE_SENTINEL; row_words * s.dims[1] as usize];
    for i1 in 0..s.boxd[1] as i64 {
        for i0 in 0..s.boxd[0] as i64 {
            let (x, y) = (s.coords[0] as i64 + i0, s.coords[1] as i64 + i1);
            if x >= 0 && y >= 0 && (x as u64) < s.dims[0] && (y as u64) < s.dims[1] {
                out[y as usize * row_words + x as usize] = 0xC0DE_0000 + (i0 + s.boxd[0] as i64 * i1) as u32;
            }
        }
    }
    out
}

/// C11's records: `test_wait.parity p` is true iff the phase of parity p (the current one or the
/// one before) has completed, a token's test iff its phase completed (note 1.7).
pub fn mbarrier_reference() -> Vec<u32> {
    let rec = [0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 1, 0];
    let mut out = vec![0u32; 32];
    out[..rec.len()].copy_from_slice(&rec);
    out[31] = rec.len() as u32;
    out
}

/// C14's struct, as the host passes it: 48 bytes, padding zero.
pub const GRID_CONSTANT_BYTES: usize = 48;
pub fn grid_constant_bytes() -> [u8; GRID_CONSTANT_BYTES] {
    let mut b = [0u8; GRID_CONSTANT_BYTES];
    for i in 0..5 {
        b[4 * i..4 * i + 4].copy_from_slice(&(0x1111_1111u32 * (i as u32 + 1)).to_le_bytes());
        // a[5] at 0
    }
    b[24..32].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes()); // b at 24 (after 4 pad)
    b[32..36].copy_from_slice(&1.5f32.to_le_bytes()); // c
    for (i, h) in [0xbeefu16, 0xcafe, 0xf00d].iter().enumerate() {
        b[36 + 2 * i..38 + 2 * i].copy_from_slice(&h.to_le_bytes()); // h[3]
    }
    for i in 0..6 {
        b[42 + i] = i as u8 + 1; // tail[6]
    }
    b
}

/// The reference words of a case, where its values are fully determined.
pub fn reference(case: &Case) -> Option<Vec<u32>> {
    match &case.kind {
        Kind::Wgmma(s) => wg_reference(s),
        Kind::TmaLoad(s) => Some(tma_load_reference(s)),
        Kind::TmaStore(s) => Some(tma_store_reference(s)),
        Kind::Mbarrier => Some(mbarrier_reference()),
        Kind::GridConstant => {
            Some(grid_constant_bytes().chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect())
        }
        Kind::Rs(s) => Some(rs_reference(s)),
        Kind::Int8(s) => Some(int8_reference(s)),
        Kind::Gemm => Some(gemm_reference()),
        Kind::Sm90Gemm(s) => production::gemm_reference(s),
        Kind::Cluster => Some(cluster_reference()),
        Kind::SmemAddresses | Kind::Elect | Kind::Sm90Attention(_) => None,
    }
}

/// Checks of what the ISA leaves open but still constrains (no exact reference): `Err` names
/// the violated property.
pub fn property(case: &Case, w: &[u32]) -> Option<std::result::Result<(), String>> {
    match case.kind {
        Kind::SmemAddresses => Some((|| {
            if w[2] != 0 {
                return Err(format!("dynamic shared memory at {:#x} is not 1024-aligned", w[1]));
            }
            if w[3] != C12_DYNAMIC_BYTES {
                return Err(format!("%dynamic_smem_size = {}, launched with {C12_DYNAMIC_BYTES}", w[3]));
            }
            if w[5] != w[0] || w[6] != w[1] {
                return Err(format!(
                    "generic addresses' low 18 bits ({:#x}, {:#x}) differ from the shared offsets ({:#x}, {:#x})",
                    w[5], w[6], w[0], w[1]
                ));
            }
            Ok(())
        })()),
        Kind::Elect => Some((|| {
            for (j, &mask) in ELECT_MASKS.iter().enumerate() {
                let lanes = &w[32 * j..32 * j + 32];
                let members: Vec<usize> = (0..32).filter(|l| mask >> l & 1 == 1).collect();
                let leader = lanes[members[0]] & 0xff;
                for (l, &v) in lanes.iter().enumerate() {
                    if mask >> l & 1 == 0 {
                        if v != 0 {
                            return Err(format!("mask {mask:#010x}: lane {l} is no member but wrote {v:#x}"));
                        }
                        continue;
                    }
                    if v >> 16 != 1 || v & 0xff != leader {
                        return Err(format!(
                            "mask {mask:#010x}: lane {l} saw leader {} (lane {} saw {leader})",
                            v & 0xff,
                            members[0]
                        ));
                    }
                    if (v >> 8 & 1 == 1) != (l as u32 == leader) {
                        return Err(format!("mask {mask:#010x}: lane {l}'s predicate disagrees with leader {leader}"));
                    }
                }
                if mask >> leader & 1 == 0 {
                    return Err(format!("mask {mask:#010x}: elected lane {leader} is no member"));
                }
            }
            Ok(())
        })()),
        Kind::Sm90Gemm(s) => production::gemm_property(&s, w),
        Kind::Sm90Attention(s) => Some(production::attn_property(&s, w)),
        _ => None,
    }
}

/// What output word `index` of a case is, for a person reading a mismatch.
pub fn describe(case: &Case, index: usize) -> String {
    match &case.kind {
        Kind::Wgmma(s) if s.acc16 => {
            let (t, j) = (index / (s.n / 4), index % (s.n / 4));
            let (m, n) = d16_fragment(t, j);
            format!("thread {t} d[{j}] (f16x2) = D(m {m}, n {n}..{}) by the note's fragment", n + 1)
        }
        Kind::Wgmma(s) => {
            let (t, i) = (index / (s.n / 2), index % (s.n / 2));
            let (m, n) = d_fragment(t, i);
            format!("thread {t} d[{i}] = D(m {m}, n {n}) by the note's fragment")
        }
        Kind::Rs(s) => {
            let per = if s.s8 { 16 } else { 8 };
            let (t, i) = (index / per, index % per);
            let (m, n) = d_fragment(t, i);
            format!("thread {t} d[{i}] = D(m {m}, n {n}) = A(m {m}, k {n}) from the register fragment")
        }
        Kind::Int8(_) => {
            let (t, i) = (index / 16, index % 16);
            let (m, n) = d_fragment(t, i);
            format!("thread {t} d[{i}] = D(m {m}, n {n}) (s32)")
        }
        Kind::Gemm => {
            if index == GEMM_M * GEMM_N {
                "bounded mbarrier waits that gave up (0 = no hang)".into()
            } else {
                format!("D(m {}, n {})", index / GEMM_N, index % GEMM_N)
            }
        }
        Kind::TmaLoad(s) => {
            if index == 0 {
                return "phase completed (1) or the bounded wait gave up (0)".into();
            }
            let width = [0, 32, 64, 128][s.swizzle as usize];
            let byte = 4 * (index - 1);
            // swizzle is an involution: the element stored at `byte` has linear offset swz(byte)
            let lin = swizzle(byte, width) / 2;
            let (n0, n1) = (s.boxd[0] as usize, s.boxd[1] as usize);
            let (i0, i1, i2) = (lin % n0, lin / n0 % n1, lin / (n0 * n1));
            format!(
                "smem bytes {byte}..{}: box elements ({i0}..{}, {i1}, {i2}) by the note's swizzle",
                byte + 4,
                i0 + 1
            )
        }
        Kind::TmaStore(s) => {
            let row = (s.stride / 4) as usize;
            format!("tensor element (x {}, y {})", index % row, index / row)
        }
        Kind::Mbarrier => {
            if index == 31 {
                "number of records".into()
            } else {
                format!("record {index} (see conf_c11_mbarrier's comments)")
            }
        }
        Kind::SmemAddresses => [
            "shared address of the static array",
            "shared address of the dynamic buffer",
            "dynamic address & 1023",
            "%dynamic_smem_size",
            "%total_smem_size",
            "generic address of the static array & 0x3FFFF",
            "generic address of the dynamic buffer & 0x3FFFF",
            "shared address of the second static variable",
        ]
        .get(index)
        .unwrap_or(&"?")
        .to_string(),
        Kind::Elect => format!(
            "mask {:#010x}, lane {} (0x10000 | pred << 8 | elected lane)",
            ELECT_MASKS.get(index / 32).copied().unwrap_or(0),
            index % 32
        ),
        Kind::GridConstant => format!("struct bytes {}..{}", 4 * index, 4 * index + 4),
        Kind::Sm90Gemm(s) => production::describe_gemm(s, index),
        Kind::Sm90Attention(s) => production::describe_attn(s, index),
        Kind::Cluster if index < 1536 => {
            let (b, t) = (index / 3 / 64, index / 3 % 64);
            let what = ["mine[t] of rank + 1", "mine[63 - t] of rank + 3", "theirs[t] (stored by rank + 2)"][index % 3];
            format!("CTA {b} (cluster {}, rank {}), thread {t}: {what}", b / 4, b % 4)
        }
        Kind::Cluster => {
            let j = index - 1536;
            let what = ["%cluster_ctarank", "%cluster_nctarank", "%clusterid.x", "%nclusterid.x"][j % 4];
            format!("CTA {}: {what}", j / 4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_values_name_their_element() {
        let s = match find("c1_frag_n64").unwrap().kind {
            Kind::Wgmma(s) => s,
            _ => unreachable!(),
        };
        let r = wg_reference(&s).unwrap();
        for t in 0..128 {
            for i in 0..32 {
                let (m, n) = d_fragment(t, i);
                assert_eq!(f32::from_bits(r[t * 32 + i]), (m + 1 + 128 * n) as f32);
            }
        }
    }

    #[test]
    fn code_cases_read_one_slot_each() {
        // D(m, n) of a B-code case (K- or MN-major) is the code at B's address of (n, k = m % K): one product
        for case in all() {
            let Kind::Wgmma(s) = case.kind else { continue };
            if s.var != 0 {
                continue;
            }
            let r = wg_reference(&s).unwrap();
            for t in 0..128 {
                for i in 0..s.n / 2 {
                    let (m, n) = d_fragment(t, i);
                    let k = m % (16 * s.kb);
                    let addr = operand_addr(s.mn, WG_A_BYTES + s.offb, s.lb, s.lbob, s.sbob, k / 16, n, k % 16);
                    let want = f16::from_bits(code((addr - WG_A_BYTES) / 2)).to_f32();
                    assert_eq!(f32::from_bits(r[t * s.n / 2 + i]), want, "{} t {t} i {i}", case.name);
                }
            }
        }
    }

    #[test]
    fn mn_major_cases_read_distinct_slots_and_catch_swapped_roles() {
        // every (n, k) of B reads its own slot inside the B region (so D names it), and reading with
        // LBO and SBO exchanged (the mistake C5 is for) reads another slot somewhere
        let mut seen = 0;
        for case in all() {
            let Kind::Wgmma(s) = case.kind else { continue };
            if !s.mn {
                continue;
            }
            seen += 1;
            let mut addrs = std::collections::HashSet::new();
            let mut swapped_differs = false;
            for n in 0..s.n {
                for k in 0..16 * s.kb {
                    let (j, kk) = (k / 16, k % 16);
                    let a = operand_addr(true, WG_A_BYTES, s.lb, s.lbob, s.sbob, j, n, kk);
                    assert!((WG_A_BYTES..WG_A_BYTES + WG_B_BYTES).contains(&a), "{} ({n}, {k})", case.name);
                    assert!(addrs.insert(a), "{}: ({n}, {k}) shares slot {a}", case.name);
                    swapped_differs |= operand_addr(true, WG_A_BYTES, s.lb, s.sbob, s.lbob, j, n, kk) != a;
                }
            }
            assert!(swapped_differs, "{}", case.name);
            // and the K-major reading of the same descriptor differs too
            let r = wg_reference(&s).unwrap();
            let k_major = wg_reference(&WgSpec { mn: false, ..s }).unwrap();
            assert_ne!(r, k_major, "{}", case.name);
        }
        assert_eq!(seen, 5);
    }

    #[test]
    fn rs_fragments_cover_the_a_tile_once() {
        for s8 in [false, true] {
            let (k_total, per) = if s8 { (32, 4) } else { (16, 2) };
            let mut hit = vec![vec![0; k_total]; 64];
            for t in 0..128 {
                for j in 0..4 {
                    for e in 0..per {
                        let (m, k) = a_fragment(t, j, e, s8);
                        hit[m][k] += 1;
                    }
                }
            }
            assert!(hit.iter().flatten().all(|&h| h == 1), "s8 {s8}");
        }
        // thread 37 (w 1, g 1, q 1), a[3] half 1: m = 16 + 1 + 8, k = 8 + 2 + 1
        assert_eq!(a_fragment(37, 3, 1, false), (25, 11));
        // s8: byte 2 of a[2]: m = 17, k = 16 + 4 + 2
        assert_eq!(a_fragment(37, 2, 2, true), (17, 22));
        // plausible wrong fragments change the words: register roles exchanged (row half by j >> 1,
        // K half by j & 1), element order reversed inside a register, lanes' g and q exchanged
        for s8 in [false, true] {
            let spec = RsSpec { s8 };
            let right = rs_reference(&spec);
            let per = if s8 { 4 } else { 2 };
            let kq = if s8 { 16 } else { 8 };
            let swapped_regs = |t: usize, j: usize, e: usize, s8: bool| a_fragment(t, (j >> 1) | (j & 1) << 1, e, s8);
            let reversed = |t: usize, j: usize, e: usize, s8: bool| a_fragment(t, j, per - 1 - e, s8);
            let gq = |t: usize, j: usize, e: usize, _: bool| {
                let (w, l) = (t / 32, t % 32);
                (16 * w + (l & 3) + 4 * ((l >> 2) & 1) + 8 * (j & 1), kq * (j >> 1) + per * (l >> 3) + e)
            };
            assert_ne!(rs_reference_with(&spec, swapped_regs), right, "s8 {s8}");
            assert_ne!(rs_reference_with(&spec, reversed), right, "s8 {s8}");
            assert_ne!(rs_reference_with(&spec, gq), right, "s8 {s8}");
        }
        // the f16 RS words are the codes themselves: all distinct
        let r = rs_reference(&RsSpec { s8: false });
        assert_eq!(r.iter().collect::<std::collections::HashSet<_>>().len(), r.len());
    }

    #[test]
    fn int8_references_saturate_both_ways_and_see_the_sign_of_a() {
        let sat = int8_reference(&Int8Spec { a_unsigned: false, satfinite: true, kb: 1 });
        let v: Vec<i32> = sat.iter().map(|&w| w as i32).collect();
        assert!(v.contains(&i32::MAX) && v.contains(&i32::MIN));
        assert!(v.iter().any(|&x| x != i32::MAX && x != i32::MIN), "some sums do not overflow");
        let s8 = int8_reference(&Int8Spec { a_unsigned: false, satfinite: false, kb: 2 });
        let u8 = int8_reference(&Int8Spec { a_unsigned: true, satfinite: false, kb: 2 });
        assert_ne!(s8, u8);
        assert!(s8.iter().any(|&w| (w as i32) < 0) && s8.iter().any(|&w| (w as i32) > 0));
    }

    #[test]
    fn gemm_reference_is_the_integer_matmul() {
        let r = gemm_reference();
        assert_eq!(r.len(), GEMM_M * GEMM_N + 1);
        let d = |m: i64, n: i64| -> i64 { (0..256).map(|k| ((m + 2 * k) % 7 - 3) * ((3 * n + k) % 5 - 2)).sum() };
        for (m, n) in [(0, 0), (5, 77), (127, 127), (64, 1)] {
            assert_eq!(f32::from_bits(r[m * GEMM_N + n]), d(m as i64, n as i64) as f32, "({m}, {n})");
        }
        assert!(r[..GEMM_M * GEMM_N].iter().any(|&w| f32::from_bits(w) != 0.0));
    }

    #[test]
    fn f16_accumulator_fragment_values_name_their_elements() {
        let s = match find("c1_frag_f16acc_n8").unwrap().kind {
            Kind::Wgmma(s) => s,
            _ => unreachable!(),
        };
        let r = wg_reference(&s).unwrap();
        assert_eq!(r.len(), words(&Kind::Wgmma(s)));
        for t in 0..128 {
            for j in 0..2 {
                let (m, n) = d16_fragment(t, j);
                let w = r[t * 2 + j];
                assert_eq!(f16::from_bits(w as u16).to_f32(), (m + 1 + 128 * n) as f32);
                assert_eq!(f16::from_bits((w >> 16) as u16).to_f32(), (m + 1 + 128 * (n + 1)) as f32);
            }
        }
    }

    #[test]
    fn base_offset_cases_start_off_the_repeat_and_catch_a_relative_swizzle() {
        let mut seen = 0;
        for case in all() {
            let Kind::Wgmma(s) = case.kind else { continue };
            if s.offa == 0 && s.offb == 0 {
                continue;
            }
            seen += 1;
            // each offset operand starts off its repeat boundary, with the ISA's nonzero base offset
            for (off, base, layout) in [(s.offa, s.offa, s.la), (s.offb, WG_A_BYTES + s.offb, s.lb)] {
                if off == 0 {
                    continue;
                }
                let w = desc_width(layout);
                assert!(w > 0 && base % (8 * w) != 0, "{}: {base} is on the repeat", case.name);
                let bo = base_offset(base, layout);
                assert_eq!(bo as usize, (base >> 7) & 7, "{}", case.name);
                assert_ne!(bo, 0, "{}", case.name);
                // every K step's start (pattern + 32 j) gives the same base offset
                for j in 0..s.kb {
                    assert_eq!(((base + 32 * j) >> 7) & 7, bo as usize, "{} step {j}", case.name);
                }
            }
            // every read stays inside its operand's region
            for j in 0..s.kb {
                for k in 0..16 {
                    for m in 0..64 {
                        let a = operand_addr(false, s.offa, s.la, s.lboa, s.sboa, j, m, k);
                        assert!(a < WG_A_BYTES, "{}: A ({m}, {k}) at {a}", case.name);
                    }
                    for n in 0..s.n {
                        let b = operand_addr(false, WG_A_BYTES + s.offb, s.lb, s.lbob, s.sbob, j, n, k);
                        assert!((WG_A_BYTES..WG_A_BYTES + WG_B_BYTES).contains(&b), "{}: B ({n}, {k})", case.name);
                    }
                }
            }
            // the plausible misreadings -- the base offset ignored, the XOR taken relative to the
            // pattern start or to each K step's start instead of the absolute address -- change
            // the words; so does the base-offset-free placement (the operands on the repeat)
            let right = wg_reference(&s).unwrap();
            let rel = |from_step: bool| {
                move |mn: bool, base: usize, layout: u32, lbo: u32, sbo: u32, j: usize, r: usize, k: usize| {
                    assert!(!mn);
                    let w = desc_width(layout);
                    let start = step_start(base, layout, lbo as usize, j);
                    let lin = start + (r / 8) * sbo as usize + (r % 8) * w + 2 * k;
                    let origin = if from_step { start } else { base };
                    origin + swizzle(lin - origin, w)
                }
            };
            // (assert!, not assert_ne!: the word vectors are long)
            assert!(wg_reference_with(&s, rel(false)).unwrap() != right, "{}: relative to the pattern", case.name);
            assert!(wg_reference_with(&s, rel(true)).unwrap() != right, "{}: relative to the step", case.name);
            assert!(wg_reference(&WgSpec { offa: 0, offb: 0, ..s }).unwrap() != right, "{}: on the repeat", case.name);
        }
        assert_eq!(seen, 3);
        assert_eq!(base_offset(WG_A_BYTES + 384, 1), 3);
        assert_eq!(base_offset(256, 2), 2);
        assert_eq!(base_offset(128, 3), 1);
        assert_eq!(base_offset(WG_A_BYTES, 1), 0);
        assert_eq!(base_offset(384, 0), 0);
    }

    #[test]
    fn swizzle_is_an_involution_within_its_repeat() {
        for w in [32, 64, 128] {
            for a in 0..2048 {
                assert_eq!(swizzle(swizzle(a, w), w), a);
            }
        }
    }

    #[test]
    fn store_reference_clips() {
        let s = TmaStoreSpec { dims: [20, 12], stride: 80, boxd: [8, 8], coords: [16, 8] };
        let r = tma_store_reference(&s);
        assert_eq!(r[8 * 20 + 16], 0xC0DE_0000);
        assert_eq!(r[8 * 20 + 19], 0xC0DE_0003);
        assert_eq!(r[11 * 20 + 19], 0xC0DE_0000 + 3 + 8 * 3);
        assert_eq!(r.iter().filter(|&&w| w != STORE_SENTINEL).count(), 4 * 4);
    }
}
