//! The device forward pass of all-MiniLM-L6-v2 on the golden cases (batch3 included), on the
//! emulator (and CUDA when present), against the f32 CPU reference (per layer), the PyTorch
//! golden outputs, and, for int8, the CPU simulation of the same W8A8 arithmetic.
//!
//! fp16: cosine >= 0.9999 on mean-pooled embeddings, pooler and every layer's hidden states.
//! int8 (W8A8: per-channel weights, per-token activations; SmoothQuant-calibrated QKV, FFN1 and
//! FFN2 inputs, the FFN2 input (GELU output) quantised asymmetrically): cosine >= 0.995, the
//! target; measured 0.9959 on the two-token "empty" case ([CLS] [SEP]: per-token errors do not
//! average out), 0.998-0.999 elsewhere. The kernels' own share is checked against exact CPU
//! simulations of the same arithmetic (calibrated and uncalibrated): the device's cosine deficit
//! is at most 1.5x the simulation's plus 1e-3 (the device rounds activations to fp16 before
//! quantising, which flips a few codes; the errors then decorrelate).
mod forward_support;
mod golden_support;

use std::sync::OnceLock;

use forward_support::{cosine, devices, max_abs};
use fusebert::model::forward::{DeviceBert, ForwardOptions};
use fusebert::model::quant;
use fusebert::model::reference::{self, Options};
use fusebert::model::{BertModel, Precision};
use fusebert::tokenize::Tokenizer;
use golden_support::{model_dir, Golden};

fn model() -> &'static BertModel {
    static M: OnceLock<BertModel> = OnceLock::new();
    M.get_or_init(|| BertModel::load(&model_dir()).expect("load bundled model"))
}

const CASES: [&str; 5] = ["fox", "hello", "paragraph", "empty", "batch3"];

#[test]
fn minilm_f16_on_device_matches_reference_and_golden() {
    // Max abs error of the last hidden state: MiniLM's states reach |x| ~ 10, where one fp16
    // ulp is 2^-7; measured <= 6e-3.
    const MAX_HIDDEN_ERR: f32 = 2e-2;
    const MIN_COS: f64 = 0.9999;
    let tok = Tokenizer::from_model_dir(&model_dir(), model().config.max_position_embeddings).unwrap();
    let h = model().config.hidden_size;
    for dev in devices() {
        let mut bert = DeviceBert::new(&dev, model(), Precision::F16).unwrap();
        for case in CASES {
            let g = Golden::load(case);
            let batch = tok.encode_batch(&g.texts, false).unwrap();
            let (want, states) = reference::forward_with_hidden_states(model(), &batch, &Options::default()).unwrap();
            let (got, got_states) = bert.forward(&batch, ForwardOptions::all()).unwrap();
            let (mut cos, mut gold_cos, mut pooler_cos, mut hidden_err) = (1f64, 1f64, 1f64, 0f32);
            for (i, (gs, ws)) in got.sequences.iter().zip(&want.sequences).enumerate() {
                cos = cos.min(cosine(&gs.pooled, &ws.pooled));
                gold_cos = gold_cos.min(cosine(&gs.pooled, &g.pooled[i * h..(i + 1) * h]));
                pooler_cos =
                    pooler_cos.min(cosine(gs.pooler_output.as_ref().unwrap(), &g.pooler_output[i * h..(i + 1) * h]));
                hidden_err = hidden_err.max(max_abs(&gs.last_hidden_state, &ws.last_hidden_state));
            }
            let layer_cos: Vec<f64> =
                got_states.unwrap().layers.iter().zip(&states.layers).map(|(a, b)| cosine(a, b)).collect();
            eprintln!(
                "{dev:?} f16 {case}: mean-pooled cosine vs reference {cos:.7}, vs golden {gold_cos:.7}; pooler \
                 cosine vs golden {pooler_cos:.7}; last hidden max abs err {hidden_err:.2e}; layers {layer_cos:.7?}"
            );
            assert!(cos >= MIN_COS && gold_cos >= MIN_COS && pooler_cos >= MIN_COS, "{dev:?} f16 {case}");
            assert!(hidden_err <= MAX_HIDDEN_ERR, "{dev:?} f16 {case}: hidden err {hidden_err}");
            assert!(layer_cos.iter().all(|&c| c >= MIN_COS), "{dev:?} f16 {case}: layers {layer_cos:?}");
        }
    }
}

/// The int8 target (see the module docs; measured floor 0.9959).
const MIN_COS_VS_F32: f64 = 0.995;

#[test]
fn minilm_int8_on_device_matches_the_w8a8_simulation_and_reference() {
    let tok = Tokenizer::from_model_dir(&model_dir(), model().config.max_position_embeddings).unwrap();
    let calibration = tok.encode_batch(&quant::CALIBRATION_TEXTS, true).unwrap();
    let ranges = quant::calibrate(model(), &calibration).unwrap();
    let smoothed = quant::w8a8_device(model(), Some(&ranges));
    let unsmoothed = quant::w8a8_device(model(), None);
    let mut worst = 1f64;
    for dev in devices() {
        let mut plain = DeviceBert::new(&dev, model(), Precision::Int8).unwrap();
        let mut bert = DeviceBert::new_calibrated(&dev, model(), Precision::Int8, &calibration).unwrap();
        for case in CASES {
            let g = Golden::load(case);
            let batch = tok.encode_batch(&g.texts, false).unwrap();
            let want = reference::forward(model(), &batch, &Options::default()).unwrap();
            let (sim, _) =
                reference::forward_with_encoder_linear(model(), &batch, &Options::default(), &smoothed).unwrap();
            let (sim_plain, _) =
                reference::forward_with_encoder_linear(model(), &batch, &Options::default(), &unsmoothed).unwrap();
            let (got, _) = bert.forward(&batch, ForwardOptions::default()).unwrap();
            let (got_plain, _) = plain.forward(&batch, ForwardOptions::default()).unwrap();
            let min_cos = |a: &[fusebert::model::reference::SequenceOutput]| {
                a.iter().zip(&want.sequences).map(|(x, w)| cosine(&x.pooled, &w.pooled)).fold(1f64, f64::min)
            };
            let (vs_f32, sim_vs_f32) = (min_cos(&got.sequences), min_cos(&sim.sequences));
            let (plain_vs_f32, sim_plain_vs_f32) = (min_cos(&got_plain.sequences), min_cos(&sim_plain.sequences));
            worst = worst.min(vs_f32);
            eprintln!(
                "{dev:?} int8 {case}: mean-pooled cosine vs f32: calibrated {vs_f32:.7} (CPU simulation {sim_vs_f32:.7}), \
                 uncalibrated {plain_vs_f32:.7} (CPU simulation {sim_plain_vs_f32:.7})"
            );
            assert!(vs_f32 >= MIN_COS_VS_F32, "{dev:?} int8 {case}: vs f32 {vs_f32}");
            // the kernels add at most a fraction of what the scheme itself loses
            for (d, s, what) in [(vs_f32, sim_vs_f32, "smoothed"), (plain_vs_f32, sim_plain_vs_f32, "unsmoothed")] {
                assert!(
                    1.0 - d <= 1.5 * (1.0 - s) + 1e-3,
                    "{dev:?} int8 {what} {case}: device deficit {} vs simulation deficit {}",
                    1.0 - d,
                    1.0 - s
                );
            }
        }
    }
    eprintln!("int8 (smoothed): worst mean-pooled cosine over the golden cases {worst:.7}");
}

/// Beyond the golden cases: texts that are not calibration texts, through the device int8 path.
/// One- and two-word inputs (3-4 tokens) are the scheme's weak spot (README, Accuracy): measured
/// 0.9933-0.9957 on the device ("Thanks!" is below the 0.995 target; CPU simulation 0.9947-0.9960),
/// so the tight check is the relation to the exact simulation (as for the golden cases: device
/// deficit at most 1.5x the simulation's plus 1e-3), with an absolute floor of 0.99. Five words or more measured
/// >= 0.9992 and are held to 0.998.
#[test]
fn minilm_int8_on_texts_beyond_the_golden_cases() {
    let tok = Tokenizer::from_model_dir(&model_dir(), model().config.max_position_embeddings).unwrap();
    let calibration = tok.encode_batch(&quant::CALIBRATION_TEXTS, true).unwrap();
    let ranges = quant::calibrate(model(), &calibration).unwrap();
    let sim_linear = quant::w8a8_device(model(), Some(&ranges));
    let short = ["OK", "Thanks!", "yes"];
    let long = [
        "How do I reset my password?",
        "SELECT * FROM users WHERE id = 42;",
        "In 1969, Apollo 11 landed on the Moon and Neil Armstrong walked on its surface.",
        "Il fait beau aujourd'hui à Paris.",
    ];
    for dev in devices() {
        let mut bert = DeviceBert::new_calibrated(&dev, model(), Precision::Int8, &calibration).unwrap();
        for (texts, min_cos) in [(&short[..], 0.99), (&long[..], 0.998)] {
            let batch = tok.encode_batch(texts, false).unwrap();
            let want = reference::forward(model(), &batch, &Options::default()).unwrap();
            let (sim, _) =
                reference::forward_with_encoder_linear(model(), &batch, &Options::default(), &sim_linear).unwrap();
            let (got, _) = bert.forward(&batch, ForwardOptions::default()).unwrap();
            for (((t, g), w), s) in texts.iter().zip(&got.sequences).zip(&want.sequences).zip(&sim.sequences) {
                let (c, cs) = (cosine(&g.pooled, &w.pooled), cosine(&s.pooled, &w.pooled));
                eprintln!(
                    "{dev:?} int8 {t:?} ({} tokens): mean-pooled cosine vs f32 {c:.7} (CPU simulation {cs:.7})",
                    g.len
                );
                assert!(c >= min_cos, "{dev:?} int8 {t:?}: cosine {c} < {min_cos}");
                assert!(
                    1.0 - c <= 1.5 * (1.0 - cs) + 1e-3,
                    "{dev:?} int8 {t:?}: device deficit {} vs simulation {}",
                    1.0 - c,
                    1.0 - cs
                );
            }
        }
    }
}
