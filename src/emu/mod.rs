//! PTX emulator: parse -> IR -> execute blocks/warps, with sanitizers and counters.
