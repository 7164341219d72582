//! The device forward pass of all-MiniLM-L6-v2 on the golden cases (batch3 included), on the
//! emulator (and CUDA when present), against the f32 CPU reference (per layer), the PyTorch
//! golden outputs, and, for int8, the CPU simulation of the same W8A8 arithmetic.
//!
//! fp16: cosine >= 0.9999 on mean-pooled embeddings, pooler and every layer's hidden states.
//! int8: the W8A8 scheme itself (per-token activations, per-channel weights), simulated exactly
//! on the CPU (`quant::w8a8_linear`), reaches a mean-pooled cosine of only ~0.992 on the short
//! "Hello, world!" case and ~0.986 on the two-token "empty" case with this model (0.997-0.998
//! on the longer ones): short inputs average less quantisation noise away. So the f32 bound is
//! 0.98, below the 0.995 target, which this scheme cannot meet on this model.
//! The device and the simulation are two samples of the same quantisation noise (the device
//! rounds activations to fp16 before quantising, which flips a few codes, and the errors then
//! decorrelate), so the kernels' share is checked as: the device's cosine deficit vs f32 is at
//! most 1.5x the simulation's plus 1e-3.
mod forward_support;
mod golden_support;

use std::sync::OnceLock;

use forward_support::{cosine, devices, max_abs};
use fusebert::model::bert::{DeviceBert, ForwardOptions};
use fusebert::model::quant::w8a8_linear;
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
            let (got, got_states) = bert.forward(&batch, ForwardOptions { normalize: false, hidden_states: true }).unwrap();
            let (mut cos, mut gold_cos, mut pooler_cos, mut hidden_err) = (1f64, 1f64, 1f64, 0f32);
            for (i, (gs, ws)) in got.sequences.iter().zip(&want.sequences).enumerate() {
                cos = cos.min(cosine(&gs.mean_pooled, &ws.mean_pooled));
                gold_cos = gold_cos.min(cosine(&gs.mean_pooled, &g.mean_pooled[i * h..(i + 1) * h]));
                pooler_cos = pooler_cos.min(cosine(gs.pooler_output.as_ref().unwrap(), &g.pooler_output[i * h..(i + 1) * h]));
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

#[test]
fn minilm_int8_on_device_matches_the_w8a8_simulation_and_reference() {
    const MIN_COS_VS_F32: f64 = 0.98;
    let tok = Tokenizer::from_model_dir(&model_dir(), model().config.max_position_embeddings).unwrap();
    for dev in devices() {
        let mut bert = DeviceBert::new(&dev, model(), Precision::Int8).unwrap();
        for case in CASES {
            let g = Golden::load(case);
            let batch = tok.encode_batch(&g.texts, false).unwrap();
            let want = reference::forward(model(), &batch, &Options::default()).unwrap();
            let (sim, _) =
                reference::forward_with_encoder_linear(model(), &batch, &Options::default(), &w8a8_linear).unwrap();
            let (got, _) = bert.forward(&batch, ForwardOptions::default()).unwrap();
            let (mut vs_sim, mut vs_f32, mut sim_vs_f32, mut pooler_vs_sim) = (1f64, 1f64, 1f64, 1f64);
            for ((gs, ss), ws) in got.sequences.iter().zip(&sim.sequences).zip(&want.sequences) {
                vs_sim = vs_sim.min(cosine(&gs.mean_pooled, &ss.mean_pooled));
                vs_f32 = vs_f32.min(cosine(&gs.mean_pooled, &ws.mean_pooled));
                sim_vs_f32 = sim_vs_f32.min(cosine(&ss.mean_pooled, &ws.mean_pooled));
                pooler_vs_sim = pooler_vs_sim.min(cosine(gs.pooler_output.as_ref().unwrap(), ss.pooler_output.as_ref().unwrap()));
            }
            eprintln!(
                "{dev:?} int8 {case}: mean-pooled cosine vs W8A8 simulation {vs_sim:.7}, vs f32 {vs_f32:.7} \
                 (simulation vs f32 {sim_vs_f32:.7}); pooler vs simulation {pooler_vs_sim:.7}"
            );
            assert!(vs_f32 >= MIN_COS_VS_F32, "{dev:?} int8 {case}: vs f32 {vs_f32}");
            assert!(
                1.0 - vs_f32 <= 1.5 * (1.0 - sim_vs_f32) + 1e-3,
                "{dev:?} int8 {case}: device deficit {} vs simulation deficit {}",
                1.0 - vs_f32,
                1.0 - sim_vs_f32
            );
        }
    }
}
