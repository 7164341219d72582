//! The analytic launch plan (`fusebert::perf::plan`) against the emulator's counters, launch by
//! launch: kernel, grid, block, shared memory, tensor-core FLOPs, global load and store bytes
//! must all be equal, on a MiniLM-shaped random model and a tiny one with a classifier, in fp16
//! and int8, on ragged batches (lengths not multiples of any tile).
use fusebert::model::forward::{DeviceBert, ForwardOptions, OutputSelection};
use fusebert::model::weights::{ClassifierHead, HeadKind};
use fusebert::model::{synthetic, BertModel, Precision};
use fusebert::perf::{forward_plan, Heads};
use fusebert::tokenize::Batch;
use fusebert::Device;

fn ids(lengths: &[usize], vocab: usize, salt: u32) -> Batch {
    let seqs = lengths
        .iter()
        .enumerate()
        .map(|(b, &n)| (0..n).map(|i| (7 + 31 * i as u32 + 101 * b as u32 + salt) % vocab as u32).collect())
        .collect();
    Batch::from_ids(seqs).unwrap()
}

fn with_classifier(mut m: BertModel, labels: usize) -> BertModel {
    let h = m.config.hidden_size;
    let mut lin = m.weights.pooler.clone().unwrap();
    lin.weight.shape = vec![labels, h];
    lin.weight.data.truncate(labels * h);
    lin.bias.shape = vec![labels];
    lin.bias.data.truncate(labels);
    let labels = (0..labels).map(|i| format!("L{i}")).collect();
    m.weights.classifier = Some(ClassifierHead { linear: lin, labels, kind: HeadKind::BertPooler });
    m
}

/// Runs one forward pass on the emulator and compares every launch with the plan (attention:
/// batches up to 32 tokens take the short geometry, e.g. `[17, 30]`; longer ones the 64-row one).
fn check(model: &BertModel, precision: Precision, lengths: &[usize]) {
    let dev = Device::emulator().unwrap();
    let calib = ids(&[9, 14], model.config.vocab_size, 3);
    let mut bert = DeviceBert::new_calibrated(&dev, model, precision, &calib).unwrap();
    let batch = ids(lengths, model.config.vocab_size, 0);
    let emu = dev.emulator_backend().unwrap();
    emu.clear_launches();
    // every head the model has runs (the pooler and the classifier only run when asked for)
    bert.forward(&batch, ForwardOptions::all()).unwrap();
    let rec = emu.launches();
    let labels = model.weights.classifier.as_ref().map_or(0, |c| c.labels.len());
    let plan = forward_plan(&model.config, precision, lengths, Heads::of(model, OutputSelection::ALL));
    assert_eq!(rec.len(), plan.launches.len(), "launch count: emulator vs plan");
    assert_eq!(rec.len(), bert.launches_for(&batch, OutputSelection::ALL));
    let mut bad = Vec::new();
    for (i, (r, p)) in rec.iter().zip(&plan.launches).enumerate() {
        let c = &r.counters;
        let got = (
            r.kernel.as_str(),
            r.grid,
            r.block,
            r.shared_mem_bytes,
            2 * c.tensor_macs,
            c.global_load_bytes,
            c.global_store_bytes,
        );
        let want =
            (p.kernel.as_str(), p.grid, p.block, p.shared_mem_bytes, p.tensor_flops, p.load_bytes, p.store_bytes);
        if got != want {
            bad.push(format!("#{i} {} {:?}:\n  emulator {got:?}\n  plan     {want:?}", p.step, p.layer));
        }
        assert!(p.load_bytes >= p.min_load_bytes, "#{i}: load < minimum");
        assert!(p.tensor_flops >= p.flops, "#{i}: executed < useful FLOPs");
    }
    assert!(bad.is_empty(), "{precision:?} {lengths:?}: {} launches differ:\n{}", bad.len(), bad.join("\n"));
    // useful FLOPs: the GEMMs' 2mnk summed equals the closed form of the pass
    let (t, h, f, l) =
        (plan.tokens, model.config.hidden_size, model.config.intermediate_size, model.config.num_hidden_layers);
    let b = lengths.len();
    let mut expect = 2 * t * l * (3 * h * h + h * h + 2 * h * f) + 2 * b * h * h;
    if labels > 0 {
        expect += 2 * b * h * labels.next_multiple_of(16);
    }
    assert_eq!(plan.gemm_flops(), expect as u64);
}

fn minilm() -> BertModel {
    let mut c = synthetic::shape_config("minilm-l6").unwrap();
    c.vocab_size = 1000; // the table's size does not change any launch; keeps the upload small
    synthetic::random_model(&c, 1)
}

fn tiny() -> BertModel {
    with_classifier(synthetic::random_model(&synthetic::config(2, 64, 2, 128, 500, 160), 2), 3)
}

/// 47 tokens: the fused residual GEMMs run the 32x64 tile (`*_n*_ln`) over two row strips, one
/// partial; the plan restates their launches exactly.
#[test]
fn plan_matches_emulator_minilm_shape_f16() {
    assert_narrow_ln(&minilm(), Precision::F16, &[17, 30]);
    check(&minilm(), Precision::F16, &[17, 30]);
}

#[test]
fn plan_matches_emulator_minilm_shape_int8() {
    assert_narrow_ln(&minilm(), Precision::Int8, &[17, 30]);
    check(&minilm(), Precision::Int8, &[17, 30]);
}

fn assert_narrow_ln(m: &BertModel, precision: Precision, lengths: &[usize]) {
    let plan = forward_plan(&m.config, precision, lengths, Heads::of(m, OutputSelection::ALL));
    let narrow = plan.launches.iter().any(|l| l.kernel.contains("_n_") && l.kernel.ends_with("_ln"));
    assert!(narrow, "{precision:?} {lengths:?}: no 32x64 fused launch");
}

#[test]
fn plan_matches_emulator_tiny_with_classifier_f16() {
    check(&tiny(), Precision::F16, &[1, 70, 5]);
}

#[test]
fn plan_matches_emulator_tiny_with_classifier_int8() {
    check(&tiny(), Precision::Int8, &[1, 70, 5]);
}

/// Batches of texts of at most 32 tokens run attention's short geometry (32-row blocks of two
/// warps): the plan follows the same selection rule.
#[test]
fn plan_matches_emulator_short_texts_f16() {
    check(&tiny(), Precision::F16, &[1, 3, 17, 31, 32]);
    check(&minilm(), Precision::F16, &[20]);
}

#[test]
fn plan_matches_emulator_short_texts_int8() {
    check(&tiny(), Precision::Int8, &[3, 32, 9]);
}

/// Few tokens: the layer GEMMs split over K (`*_sk` kernels, grid z = the K chunks), FFN2 with
/// the fused layernorm (`gemm_f16_sk_ln`); the plan restates their partial-sum stores and loads
/// and the layernorm's traffic exactly.
#[test]
fn plan_matches_emulator_with_split_k_gemms_f16() {
    let m = minilm();
    let plan = forward_plan(&m.config, Precision::F16, &[20], Heads::of(&m, OutputSelection::ALL));
    let split: Vec<_> = plan.launches.iter().filter(|l| l.kernel.contains("_sk")).map(|l| l.step).collect();
    assert!(!split.is_empty(), "no split-K launch planned for 20 tokens");
    assert!(plan.launches.iter().any(|l| l.kernel.ends_with("_sk_ln")), "no split-K launch with a fused layernorm");
    check(&m, Precision::F16, &[20]);
}

/// BERT-base widths at 128 tokens: FFN2 + LN2 runs the 32x128 tile split over K
/// (`gemm_f16_nw_sk_ln`, 4 thread rows per block in its epilogue) and the attention output + LN1
/// the 32x64 one (`gemm_f16_n_ln`); the plan restates both exactly.
#[test]
fn plan_matches_emulator_with_32_row_tiles_at_bert_base_widths() {
    let m = synthetic::random_model(&synthetic::config(1, 768, 12, 3072, 500, 160), 3);
    let plan = forward_plan(&m.config, Precision::F16, &[128], Heads::of(&m, OutputSelection::ALL));
    let kernels: Vec<&str> = plan.launches.iter().map(|l| l.kernel.as_str()).collect();
    assert!(kernels.contains(&"gemm_f16_nw_sk_ln") && kernels.contains(&"gemm_f16_n_ln"), "{kernels:?}");
    check(&m, Precision::F16, &[128]);
}
