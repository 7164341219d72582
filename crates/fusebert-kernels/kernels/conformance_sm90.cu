// Hopper conformance kernels (issue 22 item 5; research note shared/docs/research/hopper.md 2.3).
//
// Each `extern "C"` kernel is one small semantic case that writes raw 32-bit words to `out`; the
// runner (src/conformance.rs, `fusebert conformance`) runs every case on a real sm_90 GPU and,
// through the CUDA driver stand-in, on the PTX emulator, and compares the words bit for bit.
// Values are chosen so that every product and sum is exact (one-hot operands, f16 codes whose bit
// pattern is the element's slot index, small integers), except C7, which records the bits of
// Hopper's f32 accumulation. Nothing may hang on hardware: every mbarrier wait is bounded and
// records whether it completed.
//
// Build (done by build.rs for files whose stem ends in _sm90; by hand while iterating):
//   nvcc -gencode arch=compute_90a,code=sm_90a -ptx conformance_sm90.cu && ptxas -arch=sm_90a -v
#include <cuda.h>
#include <cuda_fp16.h>
#include <stdint.h>

// The dynamic shared memory of every case, aligned to the 1024-byte repeat of the 128-byte swizzle
// (C12 checks that the alignment holds on the absolute shared address).
extern __shared__ __align__(1024) uint8_t smem[];

// ---------------------------------------------------------------------------------------------
// wgmma (f32 += f16 x f16, both operands from shared memory; generated wrappers, one per N)
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ void wg_f32_n8(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%0, %1, %2, %3}, %4, %5, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_f32_n8_nega(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%0, %1, %2, %3}, %4, %5, p, -1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_f32_n32(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_f32_n64(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_f32_n256(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(da), "l"(db), "r"(scale_d));
}

// The same with imm-trans-a = imm-trans-b = 1 (both operands MN-major, C5), a 128-wide non-transposed
// one (C15), f16 accumulators (C7), A from registers (RS, C2) and the integer forms (C2, C6).
__device__ __forceinline__ void wg_f32_n32_t(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_f32_n64_t(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_f32_n128_t(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_f32_n128(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_f16acc_n8(uint32_t* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %4, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k16.f16.f16.f16 {%0, %1}, %2, %3, p, 1, 1, 0, 0;\n}\n"
        : "+r"(d[0]), "+r"(d[1])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_rs_f32_n16(float* d, const uint32_t* a, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_rs_s8_n32(uint32_t* d, const uint32_t* a, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k32.s32.s8.s8 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p;\n}\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_s8s8_n32(uint32_t* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k32.s32.s8.s8 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p;\n}\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_u8s8_n32(uint32_t* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k32.s32.u8.s8 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p;\n}\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_s8s8_sat_n32(uint32_t* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k32.satfinite.s32.s8.s8 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p;\n}\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15])
        : "l"(da), "l"(db), "r"(scale_d));
}


template <int N, int NEGA, int TRANS>
__device__ __forceinline__ void wg(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    if constexpr (TRANS && N == 32) wg_f32_n32_t(d, da, db, scale_d);
    else if constexpr (TRANS && N == 64) wg_f32_n64_t(d, da, db, scale_d);
    else if constexpr (TRANS) wg_f32_n128_t(d, da, db, scale_d);
    else if constexpr (N == 8 && NEGA) wg_f32_n8_nega(d, da, db, scale_d);
    else if constexpr (N == 8) wg_f32_n8(d, da, db, scale_d);
    else if constexpr (N == 32) wg_f32_n32(d, da, db, scale_d);
    else if constexpr (N == 64) wg_f32_n64(d, da, db, scale_d);
    else wg_f32_n256(d, da, db, scale_d);
}

// Layout codes as in the descriptor's bits 62-63: 0 no swizzle (INTERLEAVE), 1 = 128B, 2 = 64B, 3 = 32B.
__device__ __forceinline__ uint32_t swz_width(int layout) { return layout == 1 ? 128 : layout == 2 ? 64 : 32; }

// 64-bit matrix descriptor: start, LBO, SBO encoded as (x & 0x3FFFF) >> 4, base offset in bits
// 49-51 (0 unless the swizzle pattern starts off its repeat boundary, see base_offset).
__device__ __forceinline__ uint64_t make_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo, int layout, uint32_t bo = 0) {
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)((lbo & 0x3FFFF) >> 4) << 16) |
           ((uint64_t)((sbo & 0x3FFFF) >> 4) << 32) | ((uint64_t)(bo & 7) << 49) | ((uint64_t)layout << 62);
}

// The descriptor's base offset for a swizzle pattern starting at the absolute shared address
// `pattern` (PTX ISA 9.7.15.5.1.2.2 "Matrix Descriptor Format", bits 51-49: 0 when the pattern
// starts on its repeat boundary -- 1024 / 512 / 256 B for 128 / 64 / 32B swizzle -- otherwise
// "base offset = (pattern start addr >> 0x7) & 0x7"; undefined without swizzle).
__device__ __forceinline__ uint32_t base_offset(uint32_t pattern, int layout) {
    if (layout == 0) return 0;
    const uint32_t repeat = 8 * swz_width(layout);
    return pattern % repeat == 0 ? 0 : (pattern >> 7) & 7;
}

// Absolute shared address of element (r, k) of a K-major f16 operand at `base` (note 1.3):
// INTERLEAVE base + (r/8) SBO + (r%8) 16 + (k/8) LBO + (k%8) 2; swizzled swz(base + (r/8) SBO + (r%8) W + 2k).
__device__ __forceinline__ uint32_t kaddr(uint32_t base, int layout, uint32_t r, uint32_t k, uint32_t lbo, uint32_t sbo) {
    if (layout == 0) return base + (r / 8) * sbo + (r % 8) * 16 + (k / 8) * lbo + (k % 8) * 2;
    uint32_t w = swz_width(layout);
    uint32_t a = base + (r / 8) * sbo + (r % 8) * w + k * 2;
    uint32_t mask = layout == 1 ? 7 : layout == 2 ? 3 : 1;
    return a ^ (((a >> 7) & mask) << 4);
}

// The same for an MN-major f16 operand (imm-trans = 1; note 1.3): INTERLEAVE
// base + (r/8) SBO + (k/8) LBO + (k%8) 16 + (r%8) 2; swizzled
// swz(base + (r/(W/2)) LBO + (k/8) SBO + (k%8) W + (r%(W/2)) 2): LBO strides the W-byte chunks
// along M/N, SBO the 8-row K groups (the reverse of the INTERLEAVE roles).
__device__ __forceinline__ uint32_t mnaddr(uint32_t base, int layout, uint32_t r, uint32_t k, uint32_t lbo, uint32_t sbo) {
    if (layout == 0) return base + (r / 8) * sbo + (k / 8) * lbo + (k % 8) * 16 + (r % 8) * 2;
    uint32_t w = swz_width(layout);
    uint32_t a = base + (r / (w / 2)) * lbo + (k / 8) * sbo + (k % 8) * w + (r % (w / 2)) * 2;
    uint32_t mask = layout == 1 ? 7 : layout == 2 ? 3 : 1;
    return a ^ (((a >> 7) & mask) << 4);
}

__device__ __forceinline__ uint16_t h(float x) { return __half_as_ushort(__float2half_rn(x)); }

// Shared memory of every wgmma case: A region [0, 8 KiB), B region [8 KiB, 24 KiB) of a
// 1024-aligned dynamic buffer (launched with exactly WG_SMEM dynamic bytes).
#define WG_A_BYTES 8192
#define WG_B_BYTES 16384
#define WG_SMEM (WG_A_BYTES + WG_B_BYTES)
// The code of f16 slot s of a code-filled region: the f16 whose bits are 0x0400 + s (a positive
// normal number, so one-hot products and their sums are exact and the result names the slot).
#define CODE(s) ((uint16_t)(0x0400 + (s)))

// Operand contents (VAR): 0 = B code-filled, A one-hot A[m][k] = (k == m % K);
// 1 = A code-filled, B one-hot B[k][n] = (k == n % K); 2 = fragment values A[m][0] = m + 1,
// A[m][1] = 1, B[0][n] = 1, B[1][n] = 128 n (D = m + 1 + 128 n); 3 = numerics (C7, bits only).
// TRANS = 1: both operands MN-major (imm-trans-a = imm-trans-b = 1, addresses by mnaddr). ACC16 = 1:
// f16 accumulators (N/4 f16x2 registers, zero before the first wgmma; C7 only).
// OFFA / OFFB (C4 base offset): the operand's swizzle pattern starts OFFA / OFFB bytes into its
// region (off the repeat boundary), the descriptors carry the ISA's base offset for it; the code
// fill still covers the whole region, so the words name the absolute slot that was read.
template <int N, int KB, int LA, int LBOA, int SBOA, int LB, int LBOB, int SBOB, int VAR, int SCALE_D, int NEGA, int PRE_BITS,
          int TRANS = 0, int ACC16 = 0, int OFFA = 0, int OFFB = 0>
__device__ void wg_case(uint32_t* out) {
    const uint32_t t = threadIdx.x;
    const uint32_t s0 = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    const uint32_t a0 = s0 + OFFA, b0 = s0 + WG_A_BYTES + OFFB;
    // the pattern starts at a0 / b0; K step j moves the start by 32 j < 128 inside it, which leaves
    // (start >> 7) & 7 as it is, so one base offset serves every step
    const uint32_t boa = OFFA ? base_offset(a0, LA) : 0, bob = OFFB ? base_offset(b0, LB) : 0;
    constexpr uint32_t K = KB * 16;
    uint16_t* sm16 = reinterpret_cast<uint16_t*>(smem);
    auto put = [&](uint32_t addr, uint16_t v) { sm16[(addr - s0) / 2] = v; };
    auto kaddr = [](uint32_t base, int layout, uint32_t r, uint32_t k, uint32_t lbo, uint32_t sbo) {
        return TRANS ? mnaddr(base, layout, r, k, lbo, sbo) : ::kaddr(base, layout, r, k, lbo, sbo);
    };
    for (uint32_t i = t; i < WG_SMEM / 4; i += blockDim.x) reinterpret_cast<uint32_t*>(smem)[i] = 0;
    __syncthreads();
    if constexpr (VAR == 0) {
        for (uint32_t s = t; s < WG_B_BYTES / 2; s += blockDim.x) sm16[WG_A_BYTES / 2 + s] = CODE(s);
        if (t < 64) put(kaddr(a0, LA, t, t % K, LBOA, SBOA), h(1.0f));
    } else if constexpr (VAR == 1) {
        for (uint32_t s = t; s < WG_A_BYTES / 2; s += blockDim.x) sm16[s] = CODE(s);
        if (t < N) put(kaddr(b0, LB, t, t % K, LBOB, SBOB), h(1.0f));
    } else if constexpr (VAR == 2) {
        if (t < 64) {
            put(kaddr(a0, LA, t, 0, LBOA, SBOA), h(float(t + 1)));
            put(kaddr(a0, LA, t, 1, LBOA, SBOA), h(1.0f));
        }
        for (uint32_t n = t; n < N; n += blockDim.x) {
            put(kaddr(b0, LB, n, 0, LBOB, SBOB), h(1.0f));
            put(kaddr(b0, LB, n, 1, LBOB, SBOB), h(128.0f * n));
        }
    } else {
        // C7: row m: A[m][0] = +-1, A[m][k>0] = (m%16+1) 2^-14 (rows 48..63: 2^-24, subnormal);
        // B[0][n] = 1 - (n&1) 2^-11, B[k>0][n] = 2^-(8 + n%8): 15 products around one f32 ulp of 1.0.
        if (t < 64) {
            put(kaddr(a0, LA, t, 0, LBOA, SBOA), h(t < 32 ? 1.0f : -1.0f));
            for (uint32_t k = 1; k < 16; ++k)
                put(kaddr(a0, LA, t, k, LBOA, SBOA), h(float(t % 16 + 1) * (t >= 48 ? 0x1p-24f : 0x1p-14f)));
        }
        for (uint32_t n = t; n < N; n += blockDim.x) {
            put(kaddr(b0, LB, n, 0, LBOB, SBOB), h(1.0f - float(n & 1) * 0x1p-11f));
            for (uint32_t k = 1; k < 16; ++k) put(kaddr(b0, LB, n, k, LBOB, SBOB), h(ldexpf(1.0f, -(8 + int(n % 8)))));
        }
    }
    // generic stores -> async-proxy reads by wgmma: each writing thread fences, then the barrier
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    static_assert(!ACC16 || (N == 8 && KB == 1), "f16 accumulators: m64n8k16, one step");
    if constexpr (ACC16) {
        uint32_t d[N / 4];
#pragma unroll
        for (int i = 0; i < N / 4; ++i) d[i] = 0;
#pragma unroll
        for (int i = 0; i < N / 4; ++i) asm volatile("" : "+r"(d[i])::"memory");
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
        wg_f16acc_n8(d, make_desc(a0, LBOA, SBOA, LA), make_desc(b0, LBOB, SBOB, LB), SCALE_D);
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
        for (int i = 0; i < N / 4; ++i) out[t * (N / 4) + i] = d[i];
    } else {
    float d[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; ++i) d[i] = __uint_as_float(PRE_BITS);
    // pin the accumulator writes before wgmma.fence (CUTLASS warpgroup_fence_operand): otherwise
    // nvcc may sink them past the fence and ptxas injects its own (C7519)
#pragma unroll
    for (int i = 0; i < N / 2; ++i) asm volatile("" : "+f"(d[i])::"memory");
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int j = 0; j < KB; ++j) {
        // K step j: INTERLEAVE moves two 8-element core columns (2 LBO); swizzled K-major rows move
        // 32 B; swizzled MN-major operands move two 8-row K groups (2 SBO)
        const uint32_t sa = LA == 0 ? a0 + j * 2 * LBOA : TRANS ? a0 + j * 2 * SBOA : a0 + 32 * j;
        const uint32_t sb = LB == 0 ? b0 + j * 2 * LBOB : TRANS ? b0 + j * 2 * SBOB : b0 + 32 * j;
        wg<N, NEGA, TRANS>(d, make_desc(sa, LBOA, SBOA, LA, boa), make_desc(sb, LBOB, SBOB, LB, bob), j == 0 ? SCALE_D : 1);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
    for (int i = 0; i < N / 2; ++i) out[t * (N / 2) + i] = __float_as_uint(d[i]);
    }
}

#define WG_CASE(name, ...) \
    extern "C" __global__ void __launch_bounds__(128, 1) name(uint32_t* out) { wg_case<__VA_ARGS__>(out); }

//      name                             N   KB LA LBOA  SBOA  LB LBOB  SBOB VAR SC NEG PRE
// C1: the D fragment (every d[i] of every thread names its (m, n) as m + 1 + 128 n)
WG_CASE(conf_c1_frag_n8,                 8,   1, 0, 128,  256,  0, 128,  256,  2, 1, 0, 0)
WG_CASE(conf_c1_frag_n64,                64,  1, 0, 128,  256,  0, 128,  256,  2, 1, 0, 0)
WG_CASE(conf_c1_frag_n256,               256, 1, 0, 128,  256,  0, 128,  256,  2, 1, 0, 0)
// C1: the f16-accumulator D fragment (m64n8k16.f16.f16.f16; D = m + 1 + 128 n < 2048, exact in f16)
WG_CASE(conf_c1_frag_f16acc_n8,          8,   1, 0, 128,  256,  0, 128,  256,  2, 1, 0, 0, 0, 1)
// C3: K-major without swizzle, LBO != SBO both ways round, on B and on A (K = 64: 4 steps)
WG_CASE(conf_c3_kmajor_b_lbo128_sbo1024, 32,  4, 0, 128,  1024, 0, 128,  1024, 0, 1, 0, 0)
WG_CASE(conf_c3_kmajor_b_lbo512_sbo128,  32,  4, 0, 128,  1024, 0, 512,  128,  0, 1, 0, 0)
WG_CASE(conf_c3_kmajor_a_lbo1024_sbo128, 64,  4, 0, 1024, 128,  0, 128,  1024, 1, 1, 0, 0)
// C4: K-major swizzled, K advanced by start + 32 j inside the row (SBO = 8 rows of W bytes)
WG_CASE(conf_c4_sw128_b,                 32,  4, 1, 16,   1024, 1, 16,   1024, 0, 1, 0, 0)
WG_CASE(conf_c4_sw64_b,                  32,  2, 2, 16,   512,  2, 16,   512,  0, 1, 0, 0)
WG_CASE(conf_c4_sw32_b,                  32,  1, 3, 16,   256,  3, 16,   256,  0, 1, 0, 0)
WG_CASE(conf_c4_sw128_a,                 64,  4, 1, 16,   1024, 1, 16,   1024, 1, 1, 0, 0)
// C4: the same with the pattern off its repeat boundary and the ISA's nonzero base offset: B at
// +384 of 1024 (128B, base offset 3); A +256 / B +384 of 512 (64B, 2 / 3, different phases so a
// misread of both cannot cancel); A code-filled at +128 of 256 (32B, 1; B one-hot on the repeat:
// every 32B offset has the same phase, so offsetting both would hide a misread). A's SW128 rows
// fill its whole 8 KiB region, so the 128B case offsets B only.
//      name                             N   KB LA LBOA  SBOA  LB LBOB  SBOB VAR SC NEG PRE TR A16 OFFA OFFB
WG_CASE(conf_c4_sw128_base_offset,       32,  4, 1, 16,   1024, 1, 16,   1024, 0, 1, 0, 0,  0, 0,  0,   384)
WG_CASE(conf_c4_sw64_base_offset,        32,  2, 2, 16,   512,  2, 16,   512,  0, 1, 0, 0,  0, 0,  256, 384)
WG_CASE(conf_c4_sw32_base_offset,        32,  1, 3, 16,   256,  3, 16,   256,  1, 1, 0, 0,  0, 0,  128, 0)
// C8: scale-d = 0 over accumulators holding 1000.0 with imm-scale-a = -1; scale-d = 1 over 0.5
WG_CASE(conf_c8_scale_d0_neg_a,          8,   1, 0, 128,  256,  0, 128,  256,  2, 0, 1, 0x447a0000)
WG_CASE(conf_c8_accumulate,              8,   1, 0, 128,  256,  0, 128,  256,  2, 1, 0, 0x3f000000)
// C7: f32 accumulation of f16 products around one ulp (bits recorded, no reference)
WG_CASE(conf_c7_numerics_n8,             8,   1, 0, 128,  256,  0, 128,  256,  3, 1, 0, 0)
// C7: the same with f16 accumulators (m64n8k16.f16.f16.f16; bits recorded)
WG_CASE(conf_c7_numerics_f16acc_n8,      8,   1, 0, 128,  256,  0, 128,  256,  3, 1, 0, 0, 0, 1)
// C5: both operands MN-major (imm-trans = 1), B code-filled, A one-hot, K = 32 in 2 steps, LBO != SBO
//      name                             N   KB LA LBOA  SBOA  LB LBOB  SBOB VAR SC NEG PRE TR
WG_CASE(conf_c5_mn_none,                 32,  2, 0, 128,  512,  0, 128,  512,  0, 1, 0, 0, 1)
WG_CASE(conf_c5_mn_none_swapped,         32,  2, 0, 1024, 128,  0, 1024, 128,  0, 1, 0, 0, 1)
WG_CASE(conf_c5_mn_sw32,                 32,  2, 3, 1024, 256,  3, 1024, 256,  0, 1, 0, 0, 1)
WG_CASE(conf_c5_mn_sw64,                 64,  2, 2, 512,  1024, 2, 512,  1024, 0, 1, 0, 0, 1)
WG_CASE(conf_c5_mn_sw128,                128, 2, 1, 4096, 1024, 1, 4096, 1024, 0, 1, 0, 0, 1)

// ---------------------------------------------------------------------------------------------
// C2: RS wgmma (A from registers). Thread t's A registers hold codes that name their slot: f16,
// half h of register j = CODE(8 t + 2 j + h); s8, byte b of register j = C2_CODE8(16 t + 4 j + b).
// B is one-hot, B[k][n] = (k == n), K-major INTERLEAVE (LBO 128, SBO 256), so D(m, n) = A(m, k = n):
// every element of the 64 x K A tile lands in the output, named by the register slot that held it.
// ---------------------------------------------------------------------------------------------
// s8 codes: 2048 slots onto 256 values, chosen so that a slot confused with one of another thread
// (t + dt) or another register byte (dj, db) gives another value unless dt + 37 (4 dj + db) = 0 mod 256.
#define C2_CODE8(s) ((uint32_t)(((s) / 16 + 37 * ((s) % 16)) & 0xff))

// One-hot B at element (n, k = n) of a K-major INTERLEAVE operand of `e`-byte elements:
// base + (n/8) SBO + (n%8) 16 + (k/T) LBO + (k%T) e, T = 16/e.
__device__ __forceinline__ uint32_t kaddr_e(uint32_t base, uint32_t e, uint32_t r, uint32_t k, uint32_t lbo, uint32_t sbo) {
    const uint32_t T = 16 / e;
    return base + (r / 8) * sbo + (r % 8) * 16 + (k / T) * lbo + (k % T) * e;
}

template <int S8>
__device__ void rs_case(uint32_t* out) {
    const uint32_t t = threadIdx.x;
    const uint32_t s0 = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    const uint32_t b0 = s0 + WG_A_BYTES;
    constexpr uint32_t N = S8 ? 32 : 16;  // = K of the instruction: B one-hot covers every k
    for (uint32_t i = t; i < WG_SMEM / 4; i += blockDim.x) reinterpret_cast<uint32_t*>(smem)[i] = 0;
    __syncthreads();
    if (t < N) {
        if constexpr (S8) smem[kaddr_e(b0, 1, t, t, 128, 256) - s0] = 1;
        else reinterpret_cast<uint16_t*>(smem)[(kaddr_e(b0, 2, t, t, 128, 256) - s0) / 2] = h(1.0f);
    }
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    uint32_t a[4];
#pragma unroll
    for (uint32_t j = 0; j < 4; ++j) {
        if constexpr (S8)
            a[j] = C2_CODE8(16 * t + 4 * j) | C2_CODE8(16 * t + 4 * j + 1) << 8 | C2_CODE8(16 * t + 4 * j + 2) << 16 |
                   C2_CODE8(16 * t + 4 * j + 3) << 24;
        else
            a[j] = (uint32_t)CODE(8 * t + 2 * j) | (uint32_t)CODE(8 * t + 2 * j + 1) << 16;
    }
    const uint64_t db = make_desc(b0, 128, 256, 0);
    if constexpr (S8) {
        uint32_t d[16];
#pragma unroll
        for (int i = 0; i < 16; ++i) d[i] = 0;
#pragma unroll
        for (int i = 0; i < 16; ++i) asm volatile("" : "+r"(d[i])::"memory");
#pragma unroll
        for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(a[j])::"memory");
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
        wg_rs_s8_n32(d, a, db, 1);
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
        for (int i = 0; i < 16; ++i) out[t * 16 + i] = d[i];
    } else {
        float d[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) d[i] = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) asm volatile("" : "+f"(d[i])::"memory");
#pragma unroll
        for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(a[j])::"memory");
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
        wg_rs_f32_n16(d, a, db, 1);
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
        for (int i = 0; i < 8; ++i) out[t * 8 + i] = __float_as_uint(d[i]);
    }
}

// m64n16k16.f32.f16.f16 with A = {a0..a3} (f16x2): D(m, n) = A(m, n), 8 words per thread
extern "C" __global__ void __launch_bounds__(128, 1) conf_c2_rs_f16(uint32_t* out) { rs_case<0>(out); }
// m64n32k32.s32.s8.s8 with A = {a0..a3} (s8x4): D(m, n) = A(m, n) sign-extended, 16 words per thread
extern "C" __global__ void __launch_bounds__(128, 1) conf_c2_rs_s8(uint32_t* out) { rs_case<1>(out); }

// ---------------------------------------------------------------------------------------------
// C6: int8 wgmma m64n32k32 (s32 accumulators), both operands K-major with the 128-byte swizzle
// (SBO 1024, K advanced by start + 32 j), filled with per-byte codes: A byte at offset s of its
// region = C6_CODE_A(s), B byte = C6_CODE_B(s) (the kernel computes no address: the reference
// reads both through the note's formula). ATYPE 0 = s8 x s8, 1 = u8 x s8. SAT = 1: `.satfinite`
// over accumulators preset to 0x7fffff00 (even d[i]) / 0x80000100 (odd d[i]), so the sums overflow
// both ways (or not, by their sign).
// ---------------------------------------------------------------------------------------------
#define C6_CODE_A(s) ((uint32_t)(((s) * 13 + ((s) >> 8) * 7 + 1) & 0xff))
#define C6_CODE_B(s) ((uint32_t)(((s) * 29 + ((s) >> 7) * 5 + 3) & 0xff))

template <int ATYPE, int SAT, int KB>
__device__ void s8_case(uint32_t* out) {
    const uint32_t t = threadIdx.x;
    const uint32_t s0 = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    const uint32_t a0 = s0, b0 = s0 + WG_A_BYTES;
    uint32_t* w = reinterpret_cast<uint32_t*>(smem);
    for (uint32_t i = t; i < WG_A_BYTES / 4; i += blockDim.x)
        w[i] = C6_CODE_A(4 * i) | C6_CODE_A(4 * i + 1) << 8 | C6_CODE_A(4 * i + 2) << 16 | C6_CODE_A(4 * i + 3) << 24;
    for (uint32_t i = t; i < WG_B_BYTES / 4; i += blockDim.x)
        w[WG_A_BYTES / 4 + i] =
            C6_CODE_B(4 * i) | C6_CODE_B(4 * i + 1) << 8 | C6_CODE_B(4 * i + 2) << 16 | C6_CODE_B(4 * i + 3) << 24;
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    uint32_t d[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) d[i] = SAT ? (i & 1 ? 0x80000100u : 0x7fffff00u) : 0u;
#pragma unroll
    for (int i = 0; i < 16; ++i) asm volatile("" : "+r"(d[i])::"memory");
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int j = 0; j < KB; ++j) {
        const uint64_t da = make_desc(a0 + 32 * j, 16, 1024, 1), db = make_desc(b0 + 32 * j, 16, 1024, 1);
        if constexpr (SAT) wg_s8s8_sat_n32(d, da, db, 1);
        else if constexpr (ATYPE == 1) wg_u8s8_n32(d, da, db, 1);
        else wg_s8s8_n32(d, da, db, 1);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
    for (int i = 0; i < 16; ++i) out[t * 16 + i] = d[i];
}

extern "C" __global__ void __launch_bounds__(128, 1) conf_c6_s8s8_sw128(uint32_t* out) { s8_case<0, 0, 2>(out); }
extern "C" __global__ void __launch_bounds__(128, 1) conf_c6_u8s8_sw128(uint32_t* out) { s8_case<1, 0, 2>(out); }
extern "C" __global__ void __launch_bounds__(128, 1) conf_c6_s8s8_satfinite(uint32_t* out) { s8_case<0, 1, 1>(out); }

// ---------------------------------------------------------------------------------------------
// mbarrier helpers (single-thread, instantaneous tests; waits bounded so hardware never hangs)
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t test_parity(uint32_t bar, uint32_t parity) {
    uint32_t r;
    asm volatile("{\n.reg .pred P;\nmbarrier.test_wait.parity.shared::cta.b64 P, [%1], %2;\nselp.u32 %0, 1, 0, P;\n}\n"
                 : "=r"(r) : "r"(bar), "r"(parity) : "memory");
    return r;
}
__device__ __forceinline__ uint32_t try_parity(uint32_t bar, uint32_t parity) {
    uint32_t r;
    asm volatile("{\n.reg .pred P;\nmbarrier.try_wait.parity.shared::cta.b64 P, [%1], %2;\nselp.u32 %0, 1, 0, P;\n}\n"
                 : "=r"(r) : "r"(bar), "r"(parity) : "memory");
    return r;
}
__device__ __forceinline__ uint32_t test_token(uint32_t bar, uint64_t token) {
    uint32_t r;
    asm volatile("{\n.reg .pred P;\nmbarrier.test_wait.shared::cta.b64 P, [%1], %2;\nselp.u32 %0, 1, 0, P;\n}\n"
                 : "=r"(r) : "r"(bar), "l"(token) : "memory");
    return r;
}
// Spins on try_wait.parity at most `tries` times; 1 if the phase completed, 0 if it gave up.
__device__ __forceinline__ uint32_t bounded_wait(uint32_t bar, uint32_t parity, uint32_t tries) {
    for (uint32_t i = 0; i < tries; ++i)
        if (try_parity(bar, parity)) return 1;
    return 0;
}
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

// C11: the mbarrier state machine, driven by one thread; out[i] records each test in order
// (the expected values are in the comments: test_wait.parity p is true iff the phase of parity p,
// the current or the one before, has completed). State tokens are opaque: only tests of them
// are recorded, never their bits. out[31] = number of records.
extern "C" __global__ void conf_c11_mbarrier(uint32_t* out) {
    __shared__ __align__(8) uint64_t bar_storage;
    if (threadIdx.x != 0) return;
    const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(&bar_storage));
    uint32_t n = 0;
    auto rec = [&](uint32_t v) { out[n++] = v; };
    mbar_init(bar, 2);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    rec(test_parity(bar, 0));  // 0: phase 0 pending
    rec(test_parity(bar, 1));  // 1: a fresh barrier passes parity 1
    uint64_t tok0;
    asm volatile("mbarrier.arrive.shared::cta.b64 %0, [%1];\n" : "=l"(tok0) : "r"(bar) : "memory");
    rec(test_parity(bar, 0));  // 0: one of two arrivals
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], 16;\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 0));  // 0: arrivals done, 16 bytes outstanding
    rec(test_token(bar, tok0));  // 0
    asm volatile("mbarrier.complete_tx.shared::cta.b64 [%0], 16;\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 0));  // 1: phase 0 completed
    rec(test_parity(bar, 1));  // 0: phase 1 pending
    rec(test_token(bar, tok0));  // 1
    // phase 1: bytes land before they are expected (tx goes negative), then two arrivals
    asm volatile("mbarrier.complete_tx.shared::cta.b64 [%0], 8;\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 1));  // 0
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], 8;\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 1));  // 0: tx back at 0, one arrival left
    uint64_t tok1;
    asm volatile("mbarrier.arrive.shared::cta.b64 %0, [%1];\n" : "=l"(tok1) : "r"(bar) : "memory");
    rec(test_parity(bar, 1));  // 1: phase 1 completed
    rec(test_parity(bar, 0));  // 0: phase 2 pending (parity 0 again)
    rec(test_token(bar, tok1));  // 1: tok1 was taken in phase 1 (its arrival completed it)
    // phase 2: noComplete with a count, then the arrival that completes it
    asm volatile("mbarrier.arrive.noComplete.shared::cta.b64 _, [%0], 1;\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 0));  // 0
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 0));  // 1: phase 2 completed
    rec(test_parity(bar, 1));  // 0: phase 3 pending
    rec(try_parity(bar, 0));   // 1: try_wait on a completed phase succeeds at once
    // phase 3: two arrivals in one instruction (count 2)
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0], 2;\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 1));  // 1
    rec(test_parity(bar, 0));  // 0: phase 4 pending
    asm volatile("mbarrier.inval.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
    out[31] = n;
}

// ---------------------------------------------------------------------------------------------
// C15: the warp-specialised producer/consumer protocol of gemm_sm90.cu on one 128 x 128 x 256 f16
// GEMM (f32 accumulation): 384 threads; warpgroup 0 is the producer (setmaxnreg.dec 40, one
// elected thread of warp 0 issues two TMA boxes per k-block), warpgroups 1 and 2 the consumers
// (setmaxnreg.inc 232), each owning 64 rows. A 2-stage ring over K = 256 (4 k-blocks of 64: every
// stage is filled twice, so each barrier runs phases 0 and 1): full[s] = 1 arrival (the
// producer's arrive.expect_tx of both boxes' bytes) + the TMA transactions; empty[s] = 256
// arrivals (every consumer thread, once the wgmmas reading the stage have completed: wait_group 1
// after the next stage's commit). Map a: A[128][256] f16, map b: W[128][256] f16 (D = A W^T), both
// K contiguous, boxes 64 x 128 with the 128-byte swizzle (K-major SW128, SBO 1024, start + 32 j).
// out[128 m + n] = D(m, n) (f32 bits); out[16384] = how many bounded waits gave up (0: no hang).
// ---------------------------------------------------------------------------------------------
#define C15_STAGE_BYTES 32768
#define C15_A_BYTES 16384
#define C15_SMEM (2 * C15_STAGE_BYTES)
#define C15_TRIES (1u << 22)

__device__ __forceinline__ uint64_t desc_sw128(uint32_t saddr) { return make_desc(saddr, 16, 1024, 1); }

extern "C" __global__ void __launch_bounds__(384, 1)
    conf_c15_ws_gemm(const __grid_constant__ CUtensorMap ma, const __grid_constant__ CUtensorMap mb, uint32_t* out) {
    __shared__ __align__(8) uint64_t full[2], empty[2];
    __shared__ uint32_t failed;
    const uint32_t tid = threadIdx.x, wg = tid / 128;
    const uint32_t s0 = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    auto sh = [](const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); };
    if (tid == 0) {
        failed = 0;
        for (int s = 0; s < 2; ++s) {
            mbar_init(sh(&full[s]), 1);
            mbar_init(sh(&empty[s]), 256);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
        if (tid < 32) {
            uint32_t leader;
            asm volatile("{\n.reg .pred P;\nelect.sync _|P, 0xffffffff;\nselp.u32 %0, 1, 0, P;\n}\n" : "=r"(leader));
            if (leader) {
                for (int kb = 0; kb < 4; ++kb) {
                    const int stage = kb & 1;
                    const uint32_t phase = (kb >> 1) & 1;
                    // a fresh barrier passes parity 1 at once: the first lap does not wait
                    if (!bounded_wait(sh(&empty[stage]), phase ^ 1, C15_TRIES)) atomicAdd(&failed, 1u);
                    const uint32_t fb = sh(&full[stage]), sa = s0 + stage * C15_STAGE_BYTES;
                    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(fb), "r"(C15_STAGE_BYTES) : "memory");
                    asm volatile(
                        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
                        ::"r"(sa), "l"(reinterpret_cast<uint64_t>(&ma)), "r"(kb * 64), "r"(0), "r"(fb) : "memory");
                    asm volatile(
                        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
                        ::"r"(sa + C15_A_BYTES), "l"(reinterpret_cast<uint64_t>(&mb)), "r"(kb * 64), "r"(0), "r"(fb) : "memory");
                }
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
        const uint32_t cw = wg - 1, t = tid % 128;
        float d[64];
#pragma unroll
        for (int i = 0; i < 64; ++i) d[i] = 0.f;
        int prev = 0;
        for (int kb = 0; kb < 4; ++kb) {
            const int stage = kb & 1;
            const uint32_t phase = (kb >> 1) & 1;
            if (!bounded_wait(sh(&full[stage]), phase, C15_TRIES)) atomicAdd(&failed, 1u);
            const uint32_t sa = s0 + stage * C15_STAGE_BYTES + cw * 64 * 128, sb = s0 + stage * C15_STAGE_BYTES + C15_A_BYTES;
#pragma unroll
            for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
            asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
            for (int j = 0; j < 4; ++j) wg_f32_n128(d, desc_sw128(sa + 32 * j), desc_sw128(sb + 32 * j), (kb > 0 || j > 0) ? 1u : 0u);
            asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
            // the previous k-block's wgmmas are complete: its stage may be refilled
#pragma unroll
            for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
            asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
#pragma unroll
            for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
            if (kb > 0) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(sh(&empty[prev])) : "memory");
            prev = stage;
        }
#pragma unroll
        for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
        for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
        asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(sh(&empty[prev])) : "memory");
        // the D fragment (note 1.4, C1): d[i] = D(64 cw + 16 w + g + 8 ((i >> 1) & 1), 8 (i >> 2) + 2 q + (i & 1))
        const uint32_t w = t / 32, g = (t % 32) / 4, q = t % 4;
#pragma unroll
        for (int i = 0; i < 64; ++i) {
            const uint32_t m = 64 * cw + 16 * w + g + 8 * ((i >> 1) & 1), n = 8 * (i >> 2) + 2 * q + (i & 1);
            out[128 * m + n] = __float_as_uint(d[i]);
        }
    }
    __syncthreads();
    if (tid == 0) out[128 * 128] = failed;
}

// ---------------------------------------------------------------------------------------------
// TMA (cp.async.bulk.tensor) loads and stores through a __grid_constant__ CUtensorMap
// ---------------------------------------------------------------------------------------------
// C9: one tile load of `bytes` bytes at the coordinates into 1024-aligned dynamic shared memory
// prefilled with 0xEEEEEEEE; out[0] = 1 when the mbarrier phase completed with expect_tx = the
// full box (out-of-bounds elements included), 0 if the bounded wait gave up; out[1..] = the
// shared bytes as words, exactly as the TMA left them (swizzle placement included).
template <int RANK>
__device__ void tma_load(const CUtensorMap& map, uint32_t* out, int c0, int c1, int c2, uint32_t bytes) {
    __shared__ __align__(8) uint64_t bar_storage;
    const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(&bar_storage));
    const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    for (uint32_t i = threadIdx.x; i < bytes / 4; i += blockDim.x) reinterpret_cast<uint32_t*>(smem)[i] = 0xEEEEEEEEu;
    // the generic prefill must be ordered before the async-proxy writes of the TMA
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    if (threadIdx.x == 0) {
        mbar_init(bar, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
        const uint64_t m = reinterpret_cast<uint64_t>(&map);
        if constexpr (RANK == 2)
            asm volatile(
                "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
                ::"r"(s), "l"(m), "r"(c0), "r"(c1), "r"(bar) : "memory");
        else
            asm volatile(
                "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n"
                ::"r"(s), "l"(m), "r"(c0), "r"(c1), "r"(c2), "r"(bar) : "memory");
    }
    const uint32_t done = bounded_wait(bar, 0, 1u << 20);
    if (threadIdx.x == 0) out[0] = done;
    if (done)
        for (uint32_t i = threadIdx.x; i < bytes / 4; i += blockDim.x) out[1 + i] = reinterpret_cast<uint32_t*>(smem)[i];
}

extern "C" __global__ void conf_c9_tma_load_2d(const __grid_constant__ CUtensorMap map, uint32_t* out, int c0, int c1, uint32_t bytes) {
    tma_load<2>(map, out, c0, c1, 0, bytes);
}
extern "C" __global__ void conf_c9_tma_load_3d(const __grid_constant__ CUtensorMap map, uint32_t* out, int c0, int c1, int c2, uint32_t bytes) {
    tma_load<3>(map, out, c0, c1, c2, bytes);
}

// C10: a tile store of the box (words 0xC0DE0000 + i, filled by the generic proxy and fenced)
// at the coordinates; the runner reads back the whole tensor, prefilled with a sentinel, so the
// words show which elements were written (in-bounds ones only) and which kept the sentinel.
extern "C" __global__ void conf_c10_tma_store_2d(const __grid_constant__ CUtensorMap map, int c0, int c1, uint32_t words) {
    const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    for (uint32_t i = threadIdx.x; i < words; i += blockDim.x) reinterpret_cast<uint32_t*>(smem)[i] = 0xC0DE0000u + i;
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n"
                     ::"l"(reinterpret_cast<uint64_t>(&map)), "r"(c0), "r"(c1), "r"(s) : "memory");
        asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
        asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
    }
}

// ---------------------------------------------------------------------------------------------
// C12: shared-memory addresses. out = [static array's shared address, dynamic buffer's shared
// address, dynamic & 1023, %dynamic_smem_size, %total_smem_size, generic(static) & 0x3FFFF,
// generic(dynamic) & 0x3FFFF, a second static array's shared address]
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void conf_c12_smem_addresses(uint32_t* out) {
    __shared__ __align__(16) uint32_t st[4];
    __shared__ __align__(8) uint64_t st2;
    if (threadIdx.x != 0) return;
    st[0] = 1;
    st2 = 2;
    smem[0] = 3;
    const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(st));
    const uint32_t b = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    uint32_t dyn, total;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(dyn));
    asm volatile("mov.u32 %0, %%total_smem_size;\n" : "=r"(total));
    out[0] = a;
    out[1] = b;
    out[2] = b & 1023;
    out[3] = dyn;
    out[4] = total;
    out[5] = static_cast<uint32_t>(reinterpret_cast<uint64_t>(st) & 0x3FFFF);
    out[6] = static_cast<uint32_t>(reinterpret_cast<uint64_t>(smem) & 0x3FFFF);
    out[7] = static_cast<uint32_t>(__cvta_generic_to_shared(&st2));
}

// ---------------------------------------------------------------------------------------------
// C13: elect.sync under masks. Test j uses MASKS[j]; member lanes execute it and write
// out[32 j + lane] = 0x10000 | pred << 8 | elected lane; other lanes write 0.
// ---------------------------------------------------------------------------------------------
__constant__ uint32_t ELECT_MASKS[6] = {0xffffffffu, 0xfffffff0u, 0x0f0f0f00u, 0x80000001u, 0x00010000u, 0x7ffffffeu};

extern "C" __global__ void conf_c13_elect_sync(uint32_t* out) {
    const uint32_t lane = threadIdx.x & 31;
    for (int j = 0; j < 6; ++j) {
        const uint32_t mask = ELECT_MASKS[j];
        uint32_t v = 0;
        if ((mask >> lane) & 1) {
            uint32_t leader, pred;
            asm volatile("{\n.reg .pred P;\nelect.sync %0|P, %2;\nselp.u32 %1, 1, 0, P;\n}\n"
                         : "=r"(leader), "=r"(pred) : "r"(mask));
            v = 0x10000u | (pred << 8) | leader;
        }
        out[32 * j + lane] = v;
        __syncwarp();
    }
}

// ---------------------------------------------------------------------------------------------
// C14: a __grid_constant__ struct read through its parameter address (cvta.param), word by word
// at run-time indices (so the reads cannot be folded into ld.param of constant offsets).
// ---------------------------------------------------------------------------------------------
struct ConfParams {
    uint32_t a[5];
    uint64_t b;
    float c;
    uint16_t h[3];
    uint8_t tail[6];
};  // 40 bytes, 8-aligned

extern "C" __global__ void conf_c14_grid_constant(const __grid_constant__ ConfParams p, uint32_t* out, uint32_t words) {
    const uint32_t* w = reinterpret_cast<const uint32_t*>(&p);
    for (uint32_t i = threadIdx.x; i < words; i += blockDim.x) out[i] = w[i];
}

// ---------------------------------------------------------------------------------------------
// C17: thread block clusters and distributed shared memory (the fused-layernorm GEMMs' _cln
// entries rely on them). 2 clusters of 4 CTAs of 64 threads. CTA r of cluster c fills its
// `mine[t]` = 0x10000 c + 0x100 r + t and stores 0x20000 c + 0x100 r + t into `theirs[t]` of CTA
// (r + 2) % 4 (st.shared::cluster), then after a cluster barrier reads mine[t] of CTA (r + 1) % 4
// and mine[63 - t] of CTA (r + 3) % 4 (ld.shared::cluster), and its own theirs[t]; a second
// barrier keeps every CTA's shared memory alive until its peers are done. Thread t of CTA b
// writes out[3 (64 b + t) + {0, 1, 2}]; thread 0 also the special registers at 1536 + 4 b.
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t c17_peer(uint32_t shared_addr, uint32_t rank) {
    uint32_t a;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(a) : "r"(shared_addr), "r"(rank));
    return a;
}

extern "C" __global__ void __cluster_dims__(4, 1, 1) conf_c17_cluster(uint32_t* out) {
    __shared__ uint32_t mine[64], theirs[64];
    const uint32_t t = threadIdx.x;
    uint32_t r, n, c, nc;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(n));
    asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(c));
    asm volatile("mov.u32 %0, %%nclusterid.x;" : "=r"(nc));
    mine[t] = 0x10000u * c + 0x100u * r + t;
    const uint32_t dst = c17_peer(static_cast<uint32_t>(__cvta_generic_to_shared(&theirs[t])), (r + 2) % n);
    asm volatile("st.shared::cluster.u32 [%0], %1;" ::"r"(dst), "r"(0x20000u * c + 0x100u * r + t) : "memory");
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
    uint32_t a, b;
    const uint32_t pa = c17_peer(static_cast<uint32_t>(__cvta_generic_to_shared(&mine[t])), (r + 1) % n);
    const uint32_t pb = c17_peer(static_cast<uint32_t>(__cvta_generic_to_shared(&mine[63 - t])), (r + 3) % n);
    asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(a) : "r"(pa) : "memory");
    asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(b) : "r"(pb) : "memory");
    const uint32_t o = 3 * (64 * blockIdx.x + t);
    out[o] = a;
    out[o + 1] = b;
    out[o + 2] = theirs[t];
    if (t == 0) {
        out[1536 + 4 * blockIdx.x] = r;
        out[1536 + 4 * blockIdx.x + 1] = n;
        out[1536 + 4 * blockIdx.x + 2] = c;
        out[1536 + 4 * blockIdx.x + 3] = nc;
    }
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
