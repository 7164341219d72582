//! Batch invariance of the device forward pass: a text's outputs do not depend on the batch it
//! is in, bit for bit, in fp16 and int8 — although the batch's token count changes how the
//! layer GEMMs launch (`GemmPlan::choose`: split over K for few tokens, unsplit for many; the
//! fused residual GEMMs on 32-row tiles for few tokens). And
//! replaying the same pass (graph replay included: the split-K counters reset themselves)
//! repeats it bit for bit.
use fusebert::kernels::gemm_plan::Tile;
use fusebert::kernels::GemmPlan;
use fusebert::model::forward::{DeviceBert, ForwardOptions};
use fusebert::model::{synthetic, Precision};
use fusebert::tokenize::Batch;
use fusebert::Device;

fn text(len: usize, salt: u32, vocab: usize) -> Vec<u32> {
    (0..len as u32).map(|i| (5 + 37 * i + 101 * salt) % vocab as u32).collect()
}

#[test]
fn a_text_gives_the_same_bits_alone_and_in_a_batch() {
    // MiniLM's widths (hidden 384, FFN 1536), two layers
    let c = synthetic::config(2, 384, 12, 1536, 500, 512);
    let model = synthetic::random_model(&c, 7);
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let lengths = [20, 128, 128, 100];
    let t: usize = lengths.iter().sum();
    let alone = Batch::from_ids(vec![text(lengths[0], 0, c.vocab_size)]).unwrap();
    let batch =
        Batch::from_ids(lengths.iter().enumerate().map(|(i, &n)| text(n, i as u32, c.vocab_size)).collect()).unwrap();
    let dev = Device::emulator().unwrap();
    for precision in [Precision::F16, Precision::Int8] {
        let int8 = precision == Precision::Int8;
        // the two token counts launch some layer GEMM differently (else the test shows nothing)
        let shapes = [(3 * h, h), (h, h), (f, h), (h, f)];
        let differ = shapes.iter().any(|&(n, k)| GemmPlan::choose(20, n, k, int8) != GemmPlan::choose(t, n, k, int8));
        // (int8 sums are exact whatever the plan; at these widths its plans are the same anyway)
        assert!(differ || int8, "{precision:?}: 20 and {t} tokens launch the same GEMM plans");
        // the 32x64 tile is among the fused residual GEMMs' launches
        let ln = |m: usize| [(h, h), (h, f)].map(|(n, k)| GemmPlan::choose_with_layernorm(m, n, k, int8));
        assert!(ln(20).iter().any(|p| p.tile == Tile::Narrow), "{precision:?}: {:?}", ln(20));
        assert!(ln(20) != ln(t) || int8, "{precision:?}: {:?}", ln(t));
        let calib = Batch::from_ids(vec![text(9, 3, c.vocab_size), text(14, 4, c.vocab_size)]).unwrap();
        let mut bert = DeviceBert::new_calibrated(&dev, &model, precision, &calib).unwrap();
        bert.set_graphs(true);
        let (single, _) = bert.forward(&alone, ForwardOptions::default()).unwrap();
        let (packed, _) = bert.forward(&batch, ForwardOptions::default()).unwrap();
        let (s, p) = (&single.sequences[0], &packed.sequences[0]);
        assert_eq!(s.last_hidden_state, p.last_hidden_state, "{precision:?}: hidden states alone vs in a batch of {t}");
        assert_eq!(s.pooled, p.pooled, "{precision:?}: embedding alone vs in a batch of {t}");
        // again, twice (replays of the captured launch sequence)
        for _ in 0..2 {
            let (again, _) = bert.forward(&alone, ForwardOptions::default()).unwrap();
            assert_eq!(again.sequences[0].last_hidden_state, s.last_hidden_state, "{precision:?}: replay differs");
        }
    }
}
