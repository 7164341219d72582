//! Packed batches under a token budget, in input order.
//!
//! Batches are packed (no padding), so grouping texts by length would save nothing on the
//! compute; consecutive texts go together until the next one would pass the budget, which keeps
//! the output in input order with no reordering buffer.

/// Limits of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most tokens in one batch (a single longer text still forms a batch of its own).
    pub tokens: usize,
    /// Most texts in one batch.
    pub texts: usize,
}

impl Default for Budget {
    /// 8192 tokens (a few hundred MB of f32 activations on the CPU for a BERT-base-sized model),
    /// 1024 texts.
    fn default() -> Budget {
        Budget { tokens: 8192, texts: 1024 }
    }
}

/// Accumulates (index, token count) items and says when the current batch is full.
#[derive(Debug)]
pub struct BatchPlanner {
    budget: Budget,
    tokens: usize,
    texts: usize,
}

impl BatchPlanner {
    pub fn new(budget: Budget) -> BatchPlanner {
        BatchPlanner {
            budget: Budget { tokens: budget.tokens.max(1), texts: budget.texts.max(1) },
            tokens: 0,
            texts: 0,
        }
    }

    /// Whether an item of `tokens` tokens still fits in the current batch (an empty batch
    /// always takes it).
    pub fn fits(&self, tokens: usize) -> bool {
        self.texts == 0 || (self.tokens + tokens <= self.budget.tokens && self.texts < self.budget.texts)
    }

    /// Adds an item to the current batch.
    pub fn push(&mut self, tokens: usize) {
        self.tokens += tokens;
        self.texts += 1;
    }

    /// Starts a new batch.
    pub fn reset(&mut self) {
        self.tokens = 0;
        self.texts = 0;
    }

    /// Splits a sequence of token counts into consecutive batches (their sizes).
    pub fn split(budget: Budget, lengths: impl IntoIterator<Item = usize>) -> Vec<usize> {
        let mut p = BatchPlanner::new(budget);
        let mut sizes = Vec::new();
        for len in lengths {
            if !p.fits(len) {
                sizes.push(p.texts);
                p.reset();
            }
            p.push(len);
        }
        if p.texts > 0 {
            sizes.push(p.texts);
        }
        sizes
    }

    /// [`Self::split`] as index ranges of `lengths`.
    pub fn ranges(budget: Budget, lengths: &[usize]) -> Vec<std::ops::Range<usize>> {
        let mut start = 0;
        Self::split(budget, lengths.iter().copied())
            .into_iter()
            .map(|n| {
                start += n;
                start - n..start
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_the_budget_and_keep_order() {
        let b = Budget { tokens: 10, texts: 3 };
        assert_eq!(BatchPlanner::split(b, [4, 4, 4, 2, 2, 2, 2]), [2, 3, 2]);
        // a text over the budget forms its own batch
        assert_eq!(BatchPlanner::split(b, [3, 25, 3]), [1, 1, 1]);
        assert_eq!(BatchPlanner::split(b, []), Vec::<usize>::new());
        assert_eq!(BatchPlanner::split(Budget { tokens: 100, texts: 2 }, [1; 5]), [2, 2, 1]);
        assert_eq!(BatchPlanner::ranges(b, &[4, 4, 4, 2, 2, 2, 2]), [0..2, 2..5, 5..7]);
    }
}
