//! Cross-block write-write races on global memory, found cheaply after the launch.
//!
//! Blocks of one grid are unordered: two blocks storing to the same global byte leave a result
//! that depends on scheduling (the emulator runs blocks in an order of its own, which would
//! hide it). Each block records the byte ranges its plain stores wrote (merged while recording:
//! coalesced stores become one range per row); after the launch all ranges are sorted and
//! swept for an overlap between two different blocks. Atomics never race, and kernels with a
//! `membar`/`fence` are skipped: they may order blocks through flags (the split-K "last block"
//! pattern), which this check does not model. Loads are not recorded (read-write races between
//! blocks are not checked).

/// One range of global bytes written by one block, with the first store that wrote it.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub start: u64,
    pub end: u64,
    pub block: [u32; 3],
    /// Thread (x, y, z) in its block, PTX line and .cu location of the first store.
    pub thread: [u32; 3],
    pub line: u32,
    pub cu: u32,
}

/// A block's recorded stores.
#[derive(Default)]
pub struct BlockWrites {
    pub ranges: Vec<Written>,
}

impl BlockWrites {
    /// Records `[start, end)`, extending the previous range when contiguous; `site` (the store
    /// that starts a new range) is only built when one is started, so a coalesced warp store costs
    /// one range and one site.
    pub fn record(&mut self, start: u64, end: u64, site: impl FnOnce() -> Written) {
        if let Some(last) = self.ranges.last_mut() {
            if start == last.end || (start >= last.start && end <= last.end) {
                last.end = last.end.max(end);
                return;
            }
        }
        self.ranges.push(Written { start, end, ..site() });
    }
}

/// The first pair of ranges from different blocks that overlap, if any (earlier-starting first).
pub fn find_overlap(mut all: Vec<Written>) -> Option<(Written, Written)> {
    // (the block and thread complete the key: the same order whatever order blocks finished in)
    sort_ranges(&mut all);
    // ranges still open at the sweep position; few at a time, since stores rarely overlap
    let mut open: Vec<Written> = Vec::new();
    for r in all {
        open.retain(|o| o.end > r.start);
        if let Some(o) = open.iter().find(|o| o.block != r.block) {
            return Some((*o, r));
        }
        open.push(r);
    }
    None
}

/// Sorts by (start, end, block, thread): first by `start` alone (a cheap key: ranges
/// rarely share a start), then each run of equal starts by the whole key.
fn sort_ranges(all: &mut Vec<Written>) {
    // (sorting one u64 per range, start and index packed, then gathering once, moves 8 bytes per
    // swap instead of 48; starts of 2^40 and above, or over 2^24 ranges, take the plain sort)
    let fits = all.len() < 1 << 24 && all.iter().all(|r| r.start < 1 << 40);
    if fits {
        let mut keys: Vec<u64> = all.iter().enumerate().map(|(k, r)| r.start << 24 | k as u64).collect();
        keys.sort_unstable();
        *all = keys.iter().map(|&key| all[(key & 0xff_ffff) as usize]).collect();
    } else {
        all.sort_unstable_by_key(|r| r.start);
    }
    let mut k = 0;
    while k < all.len() {
        let run = all[k..].iter().take_while(|r| r.start == all[k].start).count();
        if run > 1 {
            all[k..k + run].sort_unstable_by_key(|r| (r.end, r.block, r.thread));
        }
        k += run;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start: u64, end: u64, b: u32) -> Written {
        Written { start, end, block: [b, 0, 0], thread: [0; 3], line: 1, cu: u32::MAX }
    }

    #[test]
    fn disjoint_and_same_block_overlaps_are_fine() {
        assert!(find_overlap(vec![w(0, 16, 0), w(16, 32, 1), w(8, 12, 0), w(32, 64, 2)]).is_none());
    }

    #[test]
    fn overlap_between_blocks_is_found() {
        let (a, b) = find_overlap(vec![w(0, 64, 0), w(100, 120, 1), w(60, 68, 2)]).unwrap();
        assert_eq!((a.block[0], b.block[0]), (0, 2));
    }

    #[test]
    fn recording_merges_contiguous_ranges() {
        let mut b = BlockWrites::default();
        for k in 0..32 {
            b.record(k * 4, k * 4 + 4, || w(k * 4, k * 4 + 4, 0));
        }
        b.record(8, 12, || w(8, 12, 0));
        b.record(200, 204, || w(200, 204, 0));
        assert_eq!(b.ranges.len(), 2);
        assert_eq!((b.ranges[0].start, b.ranges[0].end), (0, 128));
    }

    #[test]
    fn two_stage_sort_equals_the_whole_key_sort() {
        // many shared starts and ends, blocks and threads in a scrambled order
        let mut all: Vec<Written> = (0..500u32)
            .map(|k| {
                let h = k.wrapping_mul(2_654_435_761);
                let start = (h % 37) as u64 * 4;
                Written {
                    start,
                    end: start + (h >> 8) as u64 % 3 * 4 + 4,
                    block: [h >> 20 & 7, h >> 4 & 1, 0],
                    thread: [h >> 12 & 31, 0, 0],
                    line: k,
                    cu: 0,
                }
            })
            .collect();
        let mut want = all.clone();
        want.sort_by_key(|r| (r.start, r.end, r.block, r.thread));
        sort_ranges(&mut all);
        let key = |r: &Written| (r.start, r.end, r.block, r.thread);
        assert_eq!(all.iter().map(key).collect::<Vec<_>>(), want.iter().map(key).collect::<Vec<_>>());
    }
}
