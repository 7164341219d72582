//! The library half of the `fusebert` command line: streaming a corpus of texts in token-budgeted
//! batches ([`corpus`]) for `fusebert embed` at corpus scale. The commands themselves are the
//! binary (`src/cli`).
pub mod corpus;
