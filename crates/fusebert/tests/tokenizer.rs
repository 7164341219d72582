//! The tokenizer reproduces the golden input ids (tokenizers 0.23 with the shipped
//! tokenizer.json, its padding and truncation off), packs batches, and enforces the length limit.
mod golden_support;

use fusebert::tokenize::{Batch, Tokenizer};
use fusebert::Error;
use golden_support::{model_dir, Golden, CASES};

/// all-MiniLM-L6-v2's limit (max_position_embeddings).
const LIMIT: usize = 512;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_model_dir(&model_dir(), LIMIT).unwrap()
}

#[test]
fn reproduces_golden_input_ids() {
    let tok = tokenizer();
    for case in CASES {
        let g = Golden::load(case);
        let batch = tok.encode_batch(&g.texts, false).unwrap();
        assert_eq!(batch.len(), g.batch, "{case}");
        for i in 0..g.batch {
            assert_eq!(batch.input_ids[i], g.ids(i), "{case}[{i}] input ids");
            let n = g.valid_len(i);
            let types: Vec<u32> = g.token_type_ids[i][..n].iter().map(|&t| t as u32).collect();
            assert_eq!(batch.token_type_ids[i], types, "{case}[{i}] token types");
            // Right padding only: everything after the valid tokens is masked.
            assert!(g.attention_mask[i][n..].iter().all(|&m| m == 0));
        }
    }
}

#[test]
fn empty_text_is_cls_sep() {
    let b = tokenizer().encode_batch(&[""], false).unwrap();
    assert_eq!(b.input_ids, vec![vec![101, 102]]);
}

/// The shipped tokenizer.json pads and truncates to 128: ours must do neither.
#[test]
fn file_padding_and_truncation_are_off() {
    let long = "word ".repeat(200);
    let b = tokenizer().encode_batch(&["hi", long.as_str()], false).unwrap();
    assert_eq!(b.lengths, vec![3, 202]);
    assert_eq!(b.input_ids[1].len(), 202);
}

#[test]
fn packed_view_is_consistent() {
    let texts = ["Hello!", "", "The quick brown fox jumps over the lazy dog."];
    let b = tokenizer().encode_batch(&texts, false).unwrap();
    let p = &b.packed;
    assert_eq!(p.cu_seqlens.len(), texts.len() + 1);
    assert_eq!(p.cu_seqlens[0], 0);
    for i in 0..texts.len() {
        let (a, e) = (p.cu_seqlens[i] as usize, p.cu_seqlens[i + 1] as usize);
        assert_eq!(e - a, b.lengths[i]);
        assert_eq!(&p.input_ids[a..e], &b.input_ids[i][..]);
        assert_eq!(&p.token_type_ids[a..e], &b.token_type_ids[i][..]);
        assert_eq!(p.position_ids[a..e].to_vec(), (0..b.lengths[i] as u32).collect::<Vec<_>>());
    }
    assert_eq!(b.total_tokens(), p.input_ids.len());
    assert_eq!(b.max_len(), 12);
}

#[test]
fn too_long_input_is_a_typed_error_naming_its_index() {
    let long = "word ".repeat(LIMIT); // 512 words + [CLS] + [SEP]
    let e = tokenizer().encode_batch(&["short", long.as_str()], false).unwrap_err();
    match e {
        Error::InputTooLong { index, tokens, limit } => {
            assert_eq!((index, tokens, limit), (1, LIMIT + 2, LIMIT));
        }
        other => panic!("expected InputTooLong, got {other}"),
    }
}

#[test]
fn truncation_keeps_sep_at_the_end() {
    let tok = tokenizer();
    let long = "word ".repeat(LIMIT);
    let b = tok.encode_batch(&["short", long.as_str()], true).unwrap();
    assert_eq!(b.lengths[1], LIMIT);
    let ids = &b.input_ids[1];
    assert_eq!((ids[0], ids[LIMIT - 1]), (101, 102));
    let word = ids[1];
    assert!(ids[1..LIMIT - 1].iter().all(|&t| t == word));
    // An input at exactly the limit is untouched by truncation.
    let exact = "word ".repeat(LIMIT - 2);
    let a = tok.encode_batch(&[exact.as_str()], false).unwrap();
    assert_eq!(a, tok.encode_batch(&[exact.as_str()], true).unwrap());
    assert_eq!(a.lengths[0], LIMIT);
}

#[test]
fn batch_rejects_mismatched_types() {
    assert!(Batch::new(vec![vec![101, 102]], vec![vec![0]]).is_err());
    assert!(Batch::new(vec![vec![101, 102]], vec![]).is_err());
}

#[test]
fn missing_or_broken_tokenizer_file() {
    let e = Tokenizer::from_file(std::path::Path::new("/nonexistent/tokenizer.json"), LIMIT).unwrap_err();
    assert!(matches!(e, Error::FileMissing { .. }), "{e}");
    let dir = std::env::temp_dir().join(format!("fusebert-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, "{not json").unwrap();
    let e = Tokenizer::from_file(&path, LIMIT).unwrap_err();
    assert!(matches!(e, Error::Tokenizer { .. }) && e.to_string().contains("tokenizer.json"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
