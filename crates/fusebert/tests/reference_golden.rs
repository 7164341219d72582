//! The CPU reference forward pass against the golden outputs of PyTorch + transformers
//! (all-MiniLM-L6-v2, f32). Tolerances from the golden README: independent f32 implementations
//! agree to ~3e-6; we require last_hidden_state 1e-4, pooled 5e-5, pooler 1e-4 and print
//! the errors actually seen (run with `--nocapture`).
mod golden_support;

use std::sync::OnceLock;

use fusebert::model::reference::{self, Options};
use fusebert::model::BertModel;
use fusebert::tokenize::{Batch, Tokenizer};
use golden_support::{max_abs_diff, max_abs_diff_f64, model_dir, Golden};

fn model() -> &'static BertModel {
    static M: OnceLock<BertModel> = OnceLock::new();
    M.get_or_init(|| BertModel::load(&model_dir()).expect("load bundled model"))
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_model_dir(&model_dir(), model().config.max_position_embeddings).unwrap())
}

/// Runs a golden case through tokenizer + reference and checks every output on valid tokens.
fn check_case(case: &str) {
    let g = Golden::load(case);
    let h = model().config.hidden_size;
    let batch = tokenizer().encode_batch(&g.texts, false).unwrap();
    for i in 0..g.batch {
        assert_eq!(batch.input_ids[i], g.ids(i), "{case}[{i}] input ids");
    }
    let out = reference::forward(model(), &batch, &Options::default()).unwrap();
    let normed = reference::forward(model(), &batch, &Options { normalize: true }).unwrap();
    let (mut e_hidden, mut e_mean, mut e_pool, mut e_norm) = (0f32, 0f32, 0f32, 0f32);
    let (mut e_hidden64, mut e_mean64) = (0f64, 0f64);
    for (i, s) in out.sequences.iter().enumerate() {
        let n = g.valid_len(i);
        assert_eq!(s.len, n);
        let gold_rows = &g.last_hidden_state[i * g.padded_len * h..][..n * h];
        e_hidden = e_hidden.max(max_abs_diff(&s.last_hidden_state, gold_rows));
        e_mean = e_mean.max(max_abs_diff(&s.pooled, &g.pooled[i * h..][..h]));
        let gold64 = &g.last_hidden_state_f64[i * g.padded_len * h..][..n * h];
        e_hidden64 = e_hidden64.max(max_abs_diff_f64(&s.last_hidden_state, gold64));
        e_mean64 = e_mean64.max(max_abs_diff_f64(&s.pooled, &g.mean_pooled_f64[i * h..][..h]));
        e_pool = e_pool.max(max_abs_diff(s.pooler_output.as_ref().unwrap(), &g.pooler_output[i * h..][..h]));
        e_norm = e_norm.max(max_abs_diff(&normed.sequences[i].pooled, &g.sentence_embedding_l2norm[i * h..][..h]));
    }
    println!(
        "{case}: max abs error vs torch f32: last_hidden_state {e_hidden:.2e}, pooled {e_mean:.2e}, \
         pooler_output {e_pool:.2e}, l2norm {e_norm:.2e}; vs torch f64: last_hidden_state {e_hidden64:.2e}, \
         pooled {e_mean64:.2e}"
    );
    assert!(e_hidden <= 1e-4, "{case}: last_hidden_state error {e_hidden}");
    assert!(e_mean <= 5e-5, "{case}: pooled error {e_mean}");
    assert!(e_pool <= 1e-4, "{case}: pooler_output error {e_pool}");
    assert!(e_norm <= 5e-5, "{case}: sentence_embedding_l2norm error {e_norm}");
    // Same bounds against the float64 run: an f32 pass is ~1e-6 from the exact answer.
    assert!(e_hidden64 <= 1e-4, "{case}: last_hidden_state vs f64 error {e_hidden64}");
    assert!(e_mean64 <= 5e-5, "{case}: pooled vs f64 error {e_mean64}");
}

#[test]
fn golden_fox() {
    check_case("fox");
}

#[test]
fn golden_hello() {
    check_case("hello");
}

#[test]
fn golden_paragraph() {
    check_case("paragraph");
}

#[test]
fn golden_empty() {
    check_case("empty");
}

#[test]
fn golden_batch3() {
    check_case("batch3");
}

/// Packed batching has no padding, and each row's arithmetic does not depend on its
/// neighbours: a text alone and inside a batch must give bit-identical results.
#[test]
fn alone_equals_batched() {
    let g = Golden::load("batch3");
    let batched =
        reference::forward(model(), &tokenizer().encode_batch(&g.texts, false).unwrap(), &Options::default()).unwrap();
    for (i, text) in g.texts.iter().enumerate() {
        let alone =
            reference::forward(model(), &tokenizer().encode_batch(&[text], false).unwrap(), &Options::default())
                .unwrap();
        let (a, b) = (&alone.sequences[0], &batched.sequences[i]);
        assert_eq!(a.last_hidden_state, b.last_hidden_state, "text {i}: hidden states differ");
        assert_eq!(a.pooled, b.pooled, "text {i}: pooled differs");
        assert_eq!(a.pooler_output, b.pooler_output, "text {i}: pooler differs");
    }
}

/// The per-layer variant ends where `forward` ends, has one entry per layer plus the
/// embeddings, and its embedding output is LayerNorm-normalised.
#[test]
fn hidden_states_variant_is_consistent() {
    let batch = tokenizer().encode_batch(&["Hello!", "The quick brown fox"], false).unwrap();
    let out = reference::forward(model(), &batch, &Options::default()).unwrap();
    let (out2, states) = reference::forward_with_hidden_states(model(), &batch, &Options::default()).unwrap();
    assert_eq!(out, out2);
    assert_eq!(states.layers.len(), model().config.num_hidden_layers + 1);
    for (i, s) in out.sequences.iter().enumerate() {
        assert_eq!(states.sequence(model().config.num_hidden_layers, i), &s.last_hidden_state[..]);
    }
    // Layers really differ (each entry is a distinct stage).
    assert!(max_abs_diff(&states.layers[0], &states.layers[1]) > 1e-2);
}

/// Token ids outside the vocabulary and empty sequences are typed errors, not panics.
#[test]
fn rejects_invalid_batches() {
    let bad_id = Batch::from_ids(vec![vec![101, 40000, 102]]).unwrap();
    let e = reference::forward(model(), &bad_id, &Options::default()).unwrap_err();
    assert!(e.to_string().contains("vocab_size"), "{e}");
    let empty_seq = Batch::from_ids(vec![vec![]]).unwrap();
    let e = reference::forward(model(), &empty_seq, &Options::default()).unwrap_err();
    assert!(e.to_string().contains("no tokens"), "{e}");
    let bad_type = Batch::new(vec![vec![101, 102]], vec![vec![0, 5]]).unwrap();
    let e = reference::forward(model(), &bad_type, &Options::default()).unwrap_err();
    assert!(e.to_string().contains("type_vocab_size"), "{e}");
}
