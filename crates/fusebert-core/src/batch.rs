//! Batches of token ids, per sequence and packed end to end (no padding).
//!
//! Below both the tokenizer and the model: the CPU reference and the device forward take a
//! [`Batch`] without depending on how it was tokenised.
use crate::error::{Error, Result};

/// A batch of tokenised sequences, per sequence and packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Token ids of each sequence, special tokens included.
    pub input_ids: Vec<Vec<u32>>,
    /// Token type (segment) ids of each sequence, same lengths as `input_ids`.
    pub token_type_ids: Vec<Vec<u32>>,
    /// Length of each sequence in tokens.
    pub lengths: Vec<usize>,
    /// The same sequences concatenated.
    pub packed: PackedBatch,
}

/// Sequences concatenated with no padding: sequence `i` is tokens
/// `cu_seqlens[i] .. cu_seqlens[i + 1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedBatch {
    /// All token ids, `total_tokens` long.
    pub input_ids: Vec<u32>,
    /// All token type ids, `total_tokens` long.
    pub token_type_ids: Vec<u32>,
    /// Position id of each token: its index inside its own sequence (0 at each `[CLS]`), plus
    /// the model's position offset (RoBERTa: `pad_token_id + 1`; see [`Batch::with_position_offset`]).
    pub position_ids: Vec<u32>,
    /// Prefix sums of the lengths: `B + 1` entries, `cu_seqlens[0] == 0`.
    pub cu_seqlens: Vec<u32>,
}

impl Batch {
    /// Builds a batch from token ids and token types (same shapes).
    pub fn new(input_ids: Vec<Vec<u32>>, token_type_ids: Vec<Vec<u32>>) -> Result<Batch> {
        if input_ids.len() != token_type_ids.len()
            || input_ids.iter().zip(&token_type_ids).any(|(a, b)| a.len() != b.len())
        {
            return Err(Error::Input("token_type_ids do not have the shape of input_ids".into()));
        }
        let lengths: Vec<usize> = input_ids.iter().map(Vec::len).collect();
        let mut cu_seqlens = Vec::with_capacity(lengths.len() + 1);
        cu_seqlens.push(0u32);
        for &l in &lengths {
            let next = *cu_seqlens.last().unwrap() as usize + l;
            let next = u32::try_from(next).map_err(|_| Error::Input("batch has more than 2^32 tokens".into()))?;
            cu_seqlens.push(next);
        }
        let packed = PackedBatch {
            input_ids: input_ids.concat(),
            token_type_ids: token_type_ids.concat(),
            position_ids: lengths.iter().flat_map(|&l| 0..l as u32).collect(),
            cu_seqlens,
        };
        Ok(Batch { input_ids, token_type_ids, lengths, packed })
    }

    /// The same batch with every position id shifted by `offset` (RoBERTa-family models number
    /// positions from `pad_token_id + 1`).
    pub fn with_position_offset(mut self, offset: u32) -> Batch {
        self.packed.position_ids.iter_mut().for_each(|p| *p += offset);
        self
    }

    /// A batch of single-segment sequences (all token types 0).
    pub fn from_ids(input_ids: Vec<Vec<u32>>) -> Result<Batch> {
        let types = input_ids.iter().map(|s| vec![0; s.len()]).collect();
        Self::new(input_ids, types)
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Sum of the lengths.
    pub fn total_tokens(&self) -> usize {
        self.packed.input_ids.len()
    }

    /// Longest sequence (0 for an empty batch).
    pub fn max_len(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }
}
