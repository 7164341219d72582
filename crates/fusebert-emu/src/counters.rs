//! Per-launch execution counters (see docs/emu-api.md): instruction mix, memory traffic,
//! coalescing (sectors) and shared-memory bank conflicts.
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    pub warp_instructions: u64,
    pub thread_instructions: u64,
    pub inst_integer: u64,
    pub inst_fp32: u64,
    pub inst_fp16: u64,
    pub inst_fp64: u64,
    pub inst_tensor: u64,
    pub inst_memory: u64,
    pub inst_control: u64,
    pub inst_special: u64,
    pub global_load_requests: u64,
    pub global_load_bytes: u64,
    pub global_load_sectors: u64,
    pub global_store_requests: u64,
    pub global_store_bytes: u64,
    pub global_store_sectors: u64,
    pub shared_load_requests: u64,
    pub shared_store_requests: u64,
    pub shared_wavefronts: u64,
    pub shared_bank_conflicts: u64,
    /// Bytes loaded from or stored to other CTAs' shared memory (`ld`/`st.shared::cluster`).
    pub dsmem_bytes: u64,
    pub local_load_bytes: u64,
    pub local_store_bytes: u64,
    pub barriers: u64,
    pub atomics: u64,
    pub tensor_macs: u64,
    /// The TMA and bulk loads among the global loads (also counted there): one request per
    /// copy, the in-bounds bytes, the distinct 32-byte sectors they lie in.
    pub tma_load_requests: u64,
    pub tma_load_bytes: u64,
    pub tma_load_sectors: u64,
    pub launches: u64,
}

macro_rules! add_fields {
    ($s:ident, $o:ident, $($f:ident),*) => { $( $s.$f += $o.$f; )* };
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        add_fields!(
            self,
            o,
            warp_instructions,
            thread_instructions,
            inst_integer,
            inst_fp32,
            inst_fp16,
            inst_fp64,
            inst_tensor,
            inst_memory,
            inst_control,
            inst_special,
            global_load_requests,
            global_load_bytes,
            global_load_sectors,
            global_store_requests,
            global_store_bytes,
            global_store_sectors,
            shared_load_requests,
            shared_store_requests,
            shared_wavefronts,
            shared_bank_conflicts,
            dsmem_bytes,
            local_load_bytes,
            local_store_bytes,
            barriers,
            atomics,
            tensor_macs,
            tma_load_requests,
            tma_load_bytes,
            tma_load_sectors,
            launches
        );
    }
    /// Active threads per issued warp instruction, over 32.
    pub fn simt_efficiency(&self) -> f64 {
        if self.warp_instructions == 0 {
            return 0.0;
        }
        self.thread_instructions as f64 / (32.0 * self.warp_instructions as f64)
    }
    /// Requested bytes over bytes moved in 32-byte sectors (an LSU request counts each active
    /// lane's bytes, so a broadcast -- many lanes reading one word -- can lift it above 1.0).
    pub fn global_load_efficiency(&self) -> f64 {
        if self.global_load_sectors == 0 {
            return 0.0;
        }
        self.global_load_bytes as f64 / (32.0 * self.global_load_sectors as f64)
    }
    /// TMA / bulk loads: useful bytes delivered (in-bounds elements; out-of-bounds fill and
    /// swizzle excluded) over the bytes of the 32-byte sectors they lie in; at most 1.0.
    pub fn tma_load_efficiency(&self) -> f64 {
        if self.tma_load_sectors == 0 {
            return 0.0;
        }
        self.tma_load_bytes as f64 / (32.0 * self.tma_load_sectors as f64)
    }
    pub fn global_store_efficiency(&self) -> f64 {
        if self.global_store_sectors == 0 {
            return 0.0;
        }
        self.global_store_bytes as f64 / (32.0 * self.global_store_sectors as f64)
    }
    /// All fields plus the derived ratios.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("simt_efficiency".into(), self.simt_efficiency().into());
            m.insert("global_load_efficiency".into(), self.global_load_efficiency().into());
            m.insert("global_store_efficiency".into(), self.global_store_efficiency().into());
            m.insert("tma_load_efficiency".into(), self.tma_load_efficiency().into());
        }
        v
    }
}
