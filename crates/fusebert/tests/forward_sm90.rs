//! The device forward pass on the Hopper kernel family: the emulator presenting an sm_90
//! (compute capability 9.0) selects the `_sm90` GEMMs and attention (after the self-check), in
//! lazy, eager and random completion of the asynchronous work, fp16 and int8, against the f32
//! CPU reference with the tolerances of tests/forward_device.rs; every GEMM and attention launch
//! is an `_sm90` kernel, and `KernelFamily::Sm80` on the same device goes back to mma.sync.
mod forward_support;

use forward_support::{cosine, max_abs, random_batch, random_model, Shape};
use fusebert::device::emulator::{Arch, AsyncMode, EmulatorOptions};
use fusebert::kernels::{KernelFamily, Selected};
use fusebert::model::forward::{DeviceBert, ForwardOptions};
use fusebert::model::reference::{self, Options};
use fusebert::model::{BertModel, Precision};
use fusebert::perf::KernelFamily::Sm90 as Sm90Plan;
use fusebert::Device;

const F16_MIN_COS: f64 = 0.9999;
const INT8_MIN_COS: f64 = 0.995;
const F16_MAX_HIDDEN_ERR: f32 = 1.5e-2;

fn sm90(mode: AsyncMode) -> Device {
    Device::emulator_with(EmulatorOptions { arch: Arch::Sm90, async_mode: mode, ..Default::default() })
        .expect("emulator")
}

/// Kernel names of the launches since the last clear.
fn launched(dev: &Device) -> Vec<String> {
    dev.emulator_backend().expect("emulator").launches().into_iter().map(|l| l.kernel).collect()
}

/// A GEMM or attention launch (the work the Hopper family takes over).
fn is_matmul(k: &str) -> bool {
    k.starts_with("gemm_") || k.starts_with("attention")
}

/// Shapes: head dims 32 and 64 (the 64- and 128-byte swizzles), ragged lengths, one sequence
/// past a 64-row tile (per-sequence attention tiles) and batches of short ones (packed tiles).
fn cases() -> Vec<(Shape, &'static [usize], AsyncMode)> {
    vec![
        (
            Shape { hidden: 64, heads: 2, layers: 2, intermediate: 256, vocab: 97, max_pos: 80, labels: 3 },
            &[1, 17, 70, 5],
            AsyncMode::Lazy,
        ),
        (
            Shape { hidden: 128, heads: 2, layers: 1, intermediate: 512, vocab: 101, max_pos: 160, labels: 0 },
            &[130, 9],
            AsyncMode::Eager,
        ),
        (
            Shape { hidden: 96, heads: 3, layers: 2, intermediate: 384, vocab: 50, max_pos: 64, labels: 2 },
            &[33, 2, 40],
            AsyncMode::Random(11),
        ),
    ]
}

fn check(precision: Precision, min_cos: f64) {
    let mut split = Vec::new();
    for (i, (shape, lengths, mode)) in cases().into_iter().enumerate() {
        let dev = sm90(mode);
        let model = random_model(shape, 300 + i as u64);
        let batch = random_batch(shape.vocab, lengths, 30 + i as u64);
        let (want, states) = reference::forward_with_hidden_states(&model, &batch, &Options::default()).unwrap();
        let mut bert = if precision == Precision::Int8 {
            let calibration = random_batch(shape.vocab, &[9, 40], 99);
            DeviceBert::new_calibrated(&dev, &model, precision, &calibration).unwrap()
        } else {
            DeviceBert::new(&dev, &model, precision).unwrap()
        };
        assert_eq!(bert.kernel_family(), Selected::Sm90, "auto on an sm_90 device");
        assert!(dev.self_check_verdicts().iter().all(|v| v.passed()), "{:?}", dev.self_check_verdicts());
        dev.emulator_backend().unwrap().clear_launches();
        let (got, got_states) = bert.forward(&batch, ForwardOptions::all()).unwrap();
        let names = launched(&dev);
        let matmuls: Vec<_> = names.iter().filter(|k| is_matmul(k)).collect();
        assert!(!matmuls.is_empty() && matmuls.iter().all(|k| k.contains("_sm90")), "{mode:?}: {names:?}");
        assert_eq!(names.len(), bert.launches_for(&batch, ForwardOptions::all().outputs), "{names:?}");
        // (the FFN block splits both its GEMMs over K)
        split.extend(names.iter().filter(|k| k.contains("_sk") || k.starts_with("ffn_block")).cloned());
        if precision == Precision::Int8 {
            // FFN1 quantises its own output for FFN2: one `_qa` (or, unsplit, cluster `_cqa`)
            // GEMM per layer, no asymmetric quantize launch (3 + 8 L launches)
            let qa = names.iter().filter(|k| k.starts_with("gemm_int8_sm90") && k.ends_with("qa")).count();
            assert_eq!(qa, shape.layers, "{names:?}");
            assert!(!names.iter().any(|k| k.starts_with("quantize_i8_asym")), "{names:?}");
        }
        let mut worst = 1.0f64;
        for (s, (g, w)) in got.sequences.iter().zip(&want.sequences).enumerate() {
            let cos = cosine(&g.pooled, &w.pooled);
            worst = worst.min(cos);
            assert!(cos >= min_cos, "{precision:?} case {i} seq {s}: pooled cosine {cos}");
            let pc = cosine(g.pooler_output.as_ref().unwrap(), w.pooler_output.as_ref().unwrap());
            assert!(pc >= min_cos, "{precision:?} case {i} seq {s}: pooler cosine {pc}");
            if let (Some(gl), Some(wl)) = (&g.logits, &w.logits) {
                let err = max_abs(gl, wl);
                assert!(err < 0.1, "{precision:?} case {i} seq {s}: logits err {err}");
            }
        }
        let mut worst_hidden = 0.0f32;
        for (l, (g, w)) in got_states.unwrap().layers.iter().zip(&states.layers).enumerate() {
            let cos = cosine(g, w);
            assert!(cos >= min_cos, "{precision:?} case {i} layer {l}: hidden cosine {cos}");
            worst_hidden = worst_hidden.max(max_abs(g, w));
            if precision == Precision::F16 {
                assert!(max_abs(g, w) <= F16_MAX_HIDDEN_ERR, "case {i} layer {l}: hidden max err {}", max_abs(g, w));
            }
        }
        eprintln!(
            "sm90 {precision:?} case {i} {mode:?}: min pooled cosine {worst:.7}, max hidden err {worst_hidden:.2e}"
        );
    }
    // fp16 FFN2 at K 512 and 384 (8 and 6 k-blocks of 128 bytes: two chunks) on a few row tiles
    // is split over K, in the FFN block these short batches run; int8 K of at most 512 (4
    // k-blocks) is one chunk
    if precision == Precision::F16 {
        assert!(split.iter().any(|k| k.starts_with("ffn_block_f16_sm90")), "no split-K launch: {split:?}");
    } else {
        assert!(split.is_empty(), "{split:?}");
    }
}

#[test]
fn f16_forward_on_the_hopper_kernels_matches_reference() {
    check(Precision::F16, F16_MIN_COS);
}

#[test]
fn int8_forward_on_the_hopper_kernels_matches_reference() {
    check(Precision::Int8, INT8_MIN_COS);
}

/// The library option: `Sm80` on a Hopper device runs mma.sync, `Sm90` runs the Hopper kernels
/// again (the same schedule: layernorms fused into the residual GEMMs on both); both agree with each other to fp16
/// rounding. On an sm_80 device `Sm90` is a typed error.
#[test]
fn the_kernel_family_option_switches_families() {
    let shape = Shape { hidden: 64, heads: 2, layers: 1, intermediate: 128, vocab: 60, max_pos: 100, labels: 0 };
    let model = random_model(shape, 5);
    let batch = random_batch(shape.vocab, &[23, 4], 11);
    let dev = sm90(AsyncMode::Lazy);
    let mut bert = DeviceBert::new(&dev, &model, Precision::F16).unwrap();
    let run = |bert: &mut DeviceBert| {
        dev.emulator_backend().unwrap().clear_launches();
        let (out, _) = bert.forward(&batch, ForwardOptions::embeddings(false)).unwrap();
        (out.sequences.into_iter().map(|s| s.pooled).collect::<Vec<_>>(), launched(&dev))
    };
    let (hopper, k90) = run(&mut bert);
    bert.set_kernel_family(KernelFamily::Sm80).unwrap();
    assert_eq!(bert.kernel_family(), Selected::Sm80);
    let (mma, k80) = run(&mut bert);
    assert!(k80.iter().all(|k| !k.contains("_sm90")), "{k80:?}");
    // the residual GEMMs fuse their layernorm on both families (unsplit on Hopper: a cluster
    // entry); Hopper runs the FFN as one block (a launch fewer)
    assert_eq!(k90.len(), k80.len() - 1, "{k90:?} vs {k80:?}");
    assert!(k90.iter().filter(|k| k.ends_with("_sm90_n192_cln2")).count() == 1, "{k90:?}");
    assert!(k90.iter().filter(|k| k.starts_with("ffn_block_f16_sm90")).count() == 1, "{k90:?}");
    assert!(!k90.iter().any(|k| k.starts_with("layernorm")), "{k90:?}");
    for (a, b) in hopper.iter().zip(&mma) {
        assert!(cosine(a, b) >= F16_MIN_COS, "{}", cosine(a, b));
    }
    bert.set_kernel_family(KernelFamily::Sm90).unwrap();
    assert_eq!(run(&mut bert).1, k90);

    let a100 = Device::emulator().unwrap();
    let mut bert = DeviceBert::new(&a100, &model, Precision::F16).unwrap();
    assert_eq!(bert.kernel_family(), Selected::Sm80);
    let e = bert.set_kernel_family(KernelFamily::Sm90).unwrap_err();
    assert!(e.to_string().contains("9.0"), "{e}");
}

/// int8: the Hopper FFN1 quantises its own output (`gemm_int8_sm90*_qa`) and the Hopper
/// attention writes the context's codes (`attention_int8_sm90_*`), so the `_sm90` pass has two
/// launches fewer per layer than the mma.sync pass, which keeps its `quantize_i8_asym` and
/// context `quantize_i8` launches; both agree to int8 rounding.
#[test]
fn int8_hopper_ffn1_replaces_the_asymmetric_quantize_launch() {
    let shape = Shape { hidden: 64, heads: 2, layers: 2, intermediate: 256, vocab: 60, max_pos: 100, labels: 0 };
    let model = random_model(shape, 7);
    let batch = random_batch(shape.vocab, &[23, 4, 70], 12);
    let dev = sm90(AsyncMode::Random(4));
    let calibration = random_batch(shape.vocab, &[9, 40], 99);
    let mut bert = DeviceBert::new_calibrated(&dev, &model, Precision::Int8, &calibration).unwrap();
    let run = |bert: &mut DeviceBert| {
        dev.emulator_backend().unwrap().clear_launches();
        let (out, _) = bert.forward(&batch, ForwardOptions::embeddings(false)).unwrap();
        (out.sequences.into_iter().map(|s| s.pooled).collect::<Vec<_>>(), launched(&dev))
    };
    let (hopper, k90) = run(&mut bert);
    bert.set_kernel_family(KernelFamily::Sm80).unwrap();
    let (mma, k80) = run(&mut bert);
    assert_eq!(k80.len(), k90.len() + 2 * shape.layers, "{k90:?} vs {k80:?}");
    assert_eq!(k80.iter().filter(|k| k.starts_with("quantize_i8_asym")).count(), shape.layers, "{k80:?}");
    assert_eq!(k90.iter().filter(|k| k.ends_with("qa")).count(), shape.layers, "{k90:?}");
    // the symmetric quantisations: the embeddings' and each layer's context on mma.sync, the
    // embeddings' alone on Hopper (the attentions write the context's codes)
    let symmetric = |ks: &[String]| ks.iter().filter(|k| *k == "quantize_i8_f16").count();
    assert_eq!((symmetric(&k80), symmetric(&k90)), (1 + shape.layers, 1), "{k90:?} vs {k80:?}");
    assert_eq!(k90.iter().filter(|k| k.starts_with("attention_int8_sm90")).count(), shape.layers, "{k90:?}");
    for (a, b) in hopper.iter().zip(&mma) {
        assert!(cosine(a, b) >= INT8_MIN_COS, "{}", cosine(a, b));
    }
    // back on Hopper, a second pass launches the same sequence (the code buffers are not swapped)
    bert.set_kernel_family(KernelFamily::Sm90).unwrap();
    let (again, k90b) = run(&mut bert);
    assert_eq!(k90b, k90);
    assert_eq!(again, hopper);
}

/// A batch the fused QKV attention takes (head dim 64, every sequence at most 128 tokens and
/// near it, 2 heads x 17 sequences > 132 / 4 CTAs) runs one `qkv_attention_f16_sm90_d64`
/// launch per layer instead of the QKV GEMM and attention, matches the reference, and gives
/// its sequences the same bits as a batch of two of them, which runs the two launches: the
/// fused kernel is bit-identical to them, and the rest of the `_sm90` pass is batch invariant.
#[test]
fn fused_qkv_attention_gives_the_bits_of_the_two_launches() {
    fused_qkv_attention_matches_the_two_launches(Precision::F16, 2);
}

/// int8: the fused kernel also writes the context's codes (no `quantize_ctx` launch), the bits
/// the separate `quantize_i8_f16` gives, so the rest of the layer sees the same input.
#[test]
fn int8_fused_qkv_attention_gives_the_bits_of_the_two_launches_and_the_quantize() {
    fused_qkv_attention_matches_the_two_launches(Precision::Int8, 2);
}

/// Head dim 32 (4 heads of 32: a CTA per pair of heads, 2 x 17 > 132 / 4 CTAs), fp16 and int8:
/// `qkv_attention_*_sm90_d32`, the same bits as `attention_sm90_d32` after the QKV GEMM.
#[test]
fn d32_fused_qkv_attention_gives_the_bits_of_the_two_launches() {
    fused_qkv_attention_matches_the_two_launches(Precision::F16, 4);
    fused_qkv_attention_matches_the_two_launches(Precision::Int8, 4);
}

/// Hidden 128 in `heads` heads (2: head dim 64; 4: head dim 32), 17 sequences of 104..128.
fn fused_qkv_attention_matches_the_two_launches(precision: Precision, heads: usize) {
    let shape = Shape { hidden: 128, heads, layers: 1, intermediate: 256, vocab: 61, max_pos: 130, labels: 0 };
    let d = shape.hidden / heads;
    let model = random_model(shape, 17);
    let lengths: Vec<usize> = (0..17).map(|i| 104 + (i * 7) % 25).collect();
    let batch = random_batch(shape.vocab, &lengths, 18);
    let dev = sm90(AsyncMode::Random(5));
    let int8 = precision == Precision::Int8;
    let mut bert = if int8 {
        DeviceBert::new_calibrated(&dev, &model, precision, &random_batch(shape.vocab, &[9, 40], 99)).unwrap()
    } else {
        DeviceBert::new(&dev, &model, precision).unwrap()
    };
    // hidden 128: whole 64-column output tiles, so the block (which also runs the attention-out
    // GEMM and LN1) stands for the fused QKV attention
    let fused = &format!("attention_block_{}_sm90_d{d}", if int8 { "int8" } else { "f16" });
    // (int8: the entry that also writes the context's codes)
    let attention = &format!("attention{}_sm90_d{d}", if int8 { "_int8" } else { "" });
    // the symmetric per-token quantisations: the embeddings' (int8) only, the contexts' codes
    // written by the attentions, fused or not
    let quantizes = |names: &[String]| names.iter().filter(|k| *k == "quantize_i8_f16").count();
    dev.emulator_backend().unwrap().clear_launches();
    let (all, _) = bert.forward(&batch, ForwardOptions::all()).unwrap();
    let names = launched(&dev);
    assert_eq!(names.iter().filter(|k| *k == fused).count(), shape.layers, "{names:?}");
    assert_eq!(quantizes(&names), int8 as usize, "{names:?}");
    // the roofline's plan of that launch: its geometry, tensor work and stores as the emulator
    // counted them
    let rec = dev.emulator_backend().unwrap().launches();
    let r = rec.iter().find(|l| &l.kernel == fused).unwrap();
    let heads = fusebert::perf::Heads::of(&model, ForwardOptions::all().outputs);
    let plan = fusebert::perf::forward_plan_for(&model.config, precision, &lengths, heads, Sm90Plan);
    let p = plan.launches.iter().find(|l| l.step == "attention_block").unwrap();
    assert_eq!(plan.launches.len(), names.len());
    assert_eq!(
        (r.grid, r.block, r.shared_mem_bytes, 2 * r.counters.tensor_macs, r.counters.global_store_bytes),
        (p.grid, p.block, p.shared_mem_bytes, p.tensor_flops, p.store_bytes)
    );
    assert!(!names.iter().any(|k| k.starts_with("attention") && k != fused), "{names:?}");
    assert_eq!(names.len(), bert.launches_for(&batch, ForwardOptions::all().outputs), "{names:?}");
    let want = reference::forward(&model, &batch, &Options::default()).unwrap();
    for (s, (g, w)) in all.sequences.iter().zip(&want.sequences).enumerate() {
        if int8 {
            let cos = cosine(&g.last_hidden_state, &w.last_hidden_state);
            assert!(cos >= INT8_MIN_COS, "seq {s}: hidden cosine {cos}");
        } else {
            let err = max_abs(&g.last_hidden_state, &w.last_hidden_state);
            assert!(err <= F16_MAX_HIDDEN_ERR, "seq {s}: hidden max err {err}");
        }
    }
    // two of the sequences alone: 2 x 2 CTAs, so the QKV GEMM and attention launch apart
    let pick = [0, 1];
    let ids = pick.iter().map(|&i| batch.input_ids[i].clone()).collect();
    let types = pick.iter().map(|&i| batch.token_type_ids[i].clone()).collect();
    let two = fusebert::tokenize::Batch::new(ids, types).unwrap();
    dev.emulator_backend().unwrap().clear_launches();
    let (apart, _) = bert.forward(&two, ForwardOptions::all()).unwrap();
    let names = launched(&dev);
    assert!(names.iter().any(|k| k == attention), "{names:?}");
    assert_eq!(quantizes(&names), int8 as usize, "{names:?}");
    let rec = dev.emulator_backend().unwrap().launches();
    let r = rec.iter().find(|l| &l.kernel == attention).unwrap();
    let plan = fusebert::perf::forward_plan_for(&model.config, precision, &two.lengths, heads, Sm90Plan);
    let p = plan.launches.iter().find(|l| l.step == "attention").unwrap();
    assert_eq!(
        (r.grid, r.shared_mem_bytes, 2 * r.counters.tensor_macs, r.counters.global_store_bytes),
        (p.grid, p.shared_mem_bytes, p.tensor_flops, p.store_bytes)
    );
    assert!(!names.iter().any(|k| k.starts_with("qkv_attention")), "{names:?}");
    for (j, &i) in pick.iter().enumerate() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&apart.sequences[j].last_hidden_state), bits(&all.sequences[i].last_hidden_state), "seq {i}");
    }
}

/// Hidden 192 (3 heads of 64: whole 192-column attention-out tiles), 17 sequences of 104..128,
/// int8 (the passes that take the blocks: `schedule::takes_attention_blocks`): each layer's QKV
/// GEMM, attention, attention-out GEMM and LN1 run as one `attention_block_int8_sm90_d64` launch, within the reference's tolerance, its grid, tensor work
/// and stores as the plan prices them, and the sequences get the bits a batch of two of them
/// gets (the separate launches: split QKV GEMM, attention, attention-out GEMM + LN1).
fn attention_block_matches_the_separate_launches(precision: Precision) {
    let shape = Shape { hidden: 192, heads: 3, layers: 2, intermediate: 256, vocab: 61, max_pos: 130, labels: 0 };
    let model = random_model(shape, 23);
    let lengths: Vec<usize> = (0..17).map(|i| 104 + (i * 7) % 25).collect();
    let batch = random_batch(shape.vocab, &lengths, 24);
    let dev = sm90(AsyncMode::Random(6));
    let int8 = precision == Precision::Int8;
    let mut bert = if int8 {
        DeviceBert::new_calibrated(&dev, &model, precision, &random_batch(shape.vocab, &[9, 40], 99)).unwrap()
    } else {
        DeviceBert::new(&dev, &model, precision).unwrap()
    };
    let block = &format!("attention_block_{}_sm90_d64", if int8 { "int8" } else { "f16" });
    let pick = [0, 1];
    let ids = pick.iter().map(|&i| batch.input_ids[i].clone()).collect();
    let types = pick.iter().map(|&i| batch.token_type_ids[i].clone()).collect();
    let two = fusebert::tokenize::Batch::new(ids, types).unwrap();
    // a workspace made for the mma.sync family (for this batch) has no room for the blocks'
    // scratch: the switch sizes it anew
    bert.set_kernel_family(KernelFamily::Sm80).unwrap();
    bert.forward(&batch, ForwardOptions::embeddings(false)).unwrap();
    bert.set_kernel_family(KernelFamily::Sm90).unwrap();
    dev.emulator_backend().unwrap().clear_launches();
    let (all, _) = bert.forward(&batch, ForwardOptions::all()).unwrap();
    let names = launched(&dev);
    assert_eq!(names.iter().filter(|k| *k == block).count(), shape.layers, "{names:?}");
    // no other QKV, attention or attention-out launch: the layernorm GEMMs are FFN2's
    let other = |k: &String| k.starts_with("qkv_attention") || (k.starts_with("attention_") && k != block);
    assert!(!names.iter().any(other), "{names:?}");
    assert_eq!(names.iter().filter(|k| k.starts_with("gemm") && k.contains("ln")).count(), shape.layers, "{names:?}");
    assert_eq!(names.len(), bert.launches_for(&batch, ForwardOptions::all().outputs), "{names:?}");
    let rec = dev.emulator_backend().unwrap().launches();
    let r = rec.iter().find(|l| &l.kernel == block).unwrap();
    let heads = fusebert::perf::Heads::of(&model, ForwardOptions::all().outputs);
    let plan = fusebert::perf::forward_plan_for(&model.config, precision, &lengths, heads, Sm90Plan);
    let p = plan.launches.iter().find(|l| l.step == "attention_block").unwrap();
    assert_eq!(plan.launches.len(), names.len());
    assert_eq!(
        (r.grid, r.block, r.shared_mem_bytes, 2 * r.counters.tensor_macs, r.counters.global_store_bytes),
        (p.grid, p.block, p.shared_mem_bytes, p.tensor_flops, p.store_bytes)
    );
    let want = reference::forward(&model, &batch, &Options::default()).unwrap();
    for (s, (g, w)) in all.sequences.iter().zip(&want.sequences).enumerate() {
        if int8 {
            let cos = cosine(&g.last_hidden_state, &w.last_hidden_state);
            assert!(cos >= INT8_MIN_COS, "seq {s}: hidden cosine {cos}");
        } else {
            let err = max_abs(&g.last_hidden_state, &w.last_hidden_state);
            assert!(err <= F16_MAX_HIDDEN_ERR, "seq {s}: hidden max err {err}");
        }
    }
    dev.emulator_backend().unwrap().clear_launches();
    let (apart, _) = bert.forward(&two, ForwardOptions::all()).unwrap();
    assert!(!launched(&dev).iter().any(|k| k.starts_with("attention_block")));
    for (j, &i) in pick.iter().enumerate() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&apart.sequences[j].last_hidden_state), bits(&all.sequences[i].last_hidden_state), "seq {i}");
    }
}

#[test]
fn int8_attention_block_gives_the_bits_of_the_separate_launches() {
    attention_block_matches_the_separate_launches(Precision::Int8);
}

/// The roofline's plan of `_sm90` attention in both tilings the forward pass picks (packed for
/// sequences of at most 64 tokens, per sequence above), fp16 and int8 (the entry that also
/// stores the context's codes and scales): grid, shared memory, tensor work and stores as the
/// emulator counts them.
#[test]
fn sm90_attention_plan_matches_the_emulator_in_both_tilings() {
    let shape = Shape { hidden: 128, heads: 2, layers: 1, intermediate: 128, vocab: 61, max_pos: 200, labels: 0 };
    let model = random_model(shape, 19);
    let dev = sm90(AsyncMode::Lazy);
    for precision in [Precision::F16, Precision::Int8] {
        let calibration = random_batch(shape.vocab, &[9, 40], 99);
        let mut bert = match precision {
            Precision::Int8 => DeviceBert::new_calibrated(&dev, &model, precision, &calibration).unwrap(),
            _ => DeviceBert::new(&dev, &model, precision).unwrap(),
        };
        attention_plan_matches(&dev, &model, &mut bert, precision);
    }
}

fn attention_plan_matches(dev: &Device, model: &BertModel, bert: &mut DeviceBert, precision: Precision) {
    let shape_vocab = model.config.vocab_size;
    for lengths in [&[20usize, 33, 7, 64, 1][..], &[20, 13, 5], &[150, 9, 70]] {
        let batch = random_batch(shape_vocab, lengths, 20);
        dev.emulator_backend().unwrap().clear_launches();
        bert.forward(&batch, ForwardOptions::embeddings(false)).unwrap();
        let rec = dev.emulator_backend().unwrap().launches();
        let r = rec.iter().find(|l| l.kernel.starts_with("attention")).unwrap();
        let heads = fusebert::perf::Heads::of(model, ForwardOptions::embeddings(false).outputs);
        let plan = fusebert::perf::forward_plan_for(&model.config, precision, lengths, heads, Sm90Plan);
        let p = plan.launches.iter().find(|l| l.step == "attention").unwrap();
        assert_eq!(
            (r.kernel.as_str(), r.grid, r.shared_mem_bytes, 2 * r.counters.tensor_macs, r.counters.global_store_bytes),
            (p.kernel.as_str(), p.grid, p.shared_mem_bytes, p.tensor_flops, p.store_bytes),
            "{precision:?} {lengths:?}"
        );
        assert_eq!(r.kernel.contains("_int8_"), precision == Precision::Int8, "{}", r.kernel);
    }
}

/// The forward pass launches the GEMM entries the performance plan prices, launch by launch,
/// grids included, where the plan chose between two launches with the same bits: hidden 96,
/// 128 tokens in one 128-row strip. int8 FFN2 and the attention-out GEMM run their layernorm
/// on clusters (`_n192_cln2`), FFN1's codes too; fp16 runs the FFN block (FFN1, FFN2 and LN2
/// in one launch: predicted faster than the two launches at this size), the attention-out GEMM
/// on its cluster entry.
#[test]
fn the_forward_pass_launches_the_planned_gemm_entries() {
    let (shape, _, _) = cases()[2];
    let lengths = &[33, 2, 40, 53];
    let model = random_model(shape, 302);
    let batch = random_batch(shape.vocab, lengths, 32);
    for precision in [Precision::F16, Precision::Int8] {
        let dev = sm90(AsyncMode::Lazy);
        let mut bert = if precision == Precision::Int8 {
            let calibration = random_batch(shape.vocab, &[9, 40], 99);
            DeviceBert::new_calibrated(&dev, &model, precision, &calibration).unwrap()
        } else {
            DeviceBert::new(&dev, &model, precision).unwrap()
        };
        let (_, plan) = gemms_run_as_planned(&dev, &mut bert, &model, &batch, lengths, precision);
        let int8 = precision == Precision::Int8;
        let steps = if int8 { &["attn_out_ln1", "ffn2_ln2"][..] } else { &["attn_out_ln1"] };
        for step in steps {
            let l = plan.launches.iter().find(|l| l.step == *step).unwrap();
            assert!(l.kernel.ends_with("_n192_cln2"), "{}", l.kernel);
        }
        assert_eq!(plan.launches.iter().filter(|l| l.step == "ffn_block").count(), if int8 { 0 } else { shape.layers });
    }
}

/// A launch's entry, grid and tensor FLOPs.
type Launch = (String, (u32, u32, u32), u64);

/// Runs an embedding pass of `bert` on the `_sm90` kernels and asserts its GEMM launches
/// (entries, grids and tensor work, in order: K in whole 128-byte k-blocks) are the Hopper
/// plan's; returns them and the plan.
fn gemms_run_as_planned(
    dev: &Device,
    bert: &mut DeviceBert,
    model: &fusebert::model::BertModel,
    batch: &fusebert::tokenize::Batch,
    lengths: &[usize],
    precision: Precision,
) -> (Vec<Launch>, fusebert::perf::LaunchPlan) {
    let options = ForwardOptions::embeddings(false);
    bert.set_kernel_family(KernelFamily::Sm90).unwrap();
    dev.emulator_backend().unwrap().clear_launches();
    bert.forward(batch, options).unwrap();
    let gemms = |l: &[Launch]| l.iter().filter(|(k, ..)| k.starts_with("gemm_")).cloned().collect();
    let rec = dev.emulator_backend().unwrap().launches();
    let ran: Vec<_> =
        gemms(&rec.into_iter().map(|l| (l.kernel, l.grid, 2 * l.counters.tensor_macs)).collect::<Vec<_>>());
    let heads = fusebert::perf::Heads::of(model, options.outputs);
    let plan = fusebert::perf::forward_plan_for(&model.config, precision, lengths, heads, Sm90Plan);
    let planned: Vec<_> =
        gemms(&plan.launches.iter().map(|l| (l.kernel.clone(), l.grid, l.tensor_flops)).collect::<Vec<_>>());
    assert_eq!(ran, planned, "{precision:?}");
    (ran, plan)
}

/// A GEMM the plan leaves unsplit although its K has several chunks (hidden 448 at 513 tokens,
/// the fewest that do it: the QKV GEMM's 5 x 11 tiles of 128 x 128 keep more than a quarter of
/// 132 SMs busy, K 448 is two chunks) runs unsplit: the forward pass passes its split workspace only where the plan
/// splits (a workspace passed anyway made it split, past the workspace sized for the planned
/// splits: an error).
#[test]
fn a_gemm_the_plan_leaves_unsplit_runs_unsplit() {
    let shape = Shape { hidden: 448, heads: 7, layers: 1, intermediate: 256, vocab: 50, max_pos: 300, labels: 0 };
    let lengths = &[250, 263];
    let model = random_model(shape, 303);
    let batch = random_batch(shape.vocab, lengths, 33);
    let dev = sm90(AsyncMode::Lazy);
    let mut bert = DeviceBert::new(&dev, &model, Precision::F16).unwrap();
    let (ran, _) = gemms_run_as_planned(&dev, &mut bert, &model, &batch, lengths, Precision::F16);
    let (m, n, k) = (513, 3 * 448, 448);
    assert!(fusebert::kernels::gemm_sm90::k_chunks(k, false) > 1);
    assert_eq!(fusebert::kernels::gemm_sm90::plan(m, n, k, false).splits, 1);
    assert_eq!(ran[0].0, "gemm_f16_sm90", "the QKV GEMM, unsplit");
}

/// fp16 over a short batch (where the roofline model predicts the FFN block faster than its two
/// launches, `perf::plan::ffn_block_cols`): each layer's FFN1, FFN2 and LN2 run as one
/// `ffn_block_f16_sm90*` launch and no FFN GEMM runs, the pass stays within the reference's
/// tolerance, its launch count is the schedule's and the plan's, and the block's grid, tensor
/// work and stores are what the plan prices (its parts' sums). (Its bits are the two launches':
/// `fusebert-kernels/tests/ffn_block_sm90.rs`.)
#[test]
fn an_ffn_block_runs_each_layers_ffn_in_one_launch() {
    let shape = Shape { hidden: 128, heads: 2, layers: 2, intermediate: 320, vocab: 61, max_pos: 130, labels: 0 };
    let model = random_model(shape, 27);
    let lengths = [20usize, 45];
    let batch = random_batch(shape.vocab, &lengths, 28);
    let cols = fusebert::perf::plan::ffn_block_cols(&model.config, 65).expect("the block at 65 tokens");
    let block = if cols == 64 { "ffn_block_f16_sm90_n64" } else { "ffn_block_f16_sm90" };
    let dev = sm90(AsyncMode::Random(7));
    let mut bert = DeviceBert::new(&dev, &model, Precision::F16).unwrap();
    dev.emulator_backend().unwrap().clear_launches();
    let (got, states) = bert.forward(&batch, ForwardOptions::all()).unwrap();
    let names = launched(&dev);
    assert_eq!(names.iter().filter(|k| *k == block).count(), shape.layers, "{names:?}");
    // the layernorm GEMMs are the attention-out's; the plain ones QKV's and the pooler's
    let ln = names.iter().filter(|k| k.starts_with("gemm") && k.contains("ln")).count();
    let plain = names.iter().filter(|k| k.starts_with("gemm") && !k.contains("ln")).count();
    assert_eq!((ln, plain), (shape.layers, shape.layers + 1), "{names:?}");
    assert_eq!(names.len(), bert.launches_for(&batch, ForwardOptions::all().outputs), "{names:?}");
    let heads = fusebert::perf::Heads::of(&model, ForwardOptions::all().outputs);
    let plan = fusebert::perf::forward_plan_for(&model.config, Precision::F16, &lengths, heads, Sm90Plan);
    assert_eq!(plan.launches.len(), names.len());
    let rec = dev.emulator_backend().unwrap().launches();
    for (r, p) in rec.iter().filter(|l| l.kernel == block).zip(plan.launches.iter().filter(|l| l.step == "ffn_block")) {
        assert_eq!(
            (r.grid, r.block, r.shared_mem_bytes, 2 * r.counters.tensor_macs, r.counters.global_store_bytes),
            (p.grid, p.block, p.shared_mem_bytes, p.tensor_flops, p.store_bytes)
        );
    }
    let (want, want_states) = reference::forward_with_hidden_states(&model, &batch, &Options::default()).unwrap();
    for (l, (g, w)) in states.unwrap().layers.iter().zip(&want_states.layers).enumerate() {
        assert!(max_abs(g, w) <= F16_MAX_HIDDEN_ERR, "layer {l}: hidden max err {}", max_abs(g, w));
    }
    for (s, (g, w)) in got.sequences.iter().zip(&want.sequences).enumerate() {
        assert!(cosine(&g.pooled, &w.pooled) >= F16_MIN_COS, "seq {s}");
    }
}
