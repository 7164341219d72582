//! Allocation-aware global memory and the generic address-space layout.
//!
//! Global allocations live at distinct, never-reused addresses (so use-after-free and
//! out-of-bounds accesses land outside every live allocation and are reported). Shared, local
//! and const memory are windows of the generic space.
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::RwLock;

use crate::error::{Error, Result};

/// First global address (above 4 GiB so 32-bit truncation bugs do not alias).
pub const GLOBAL_BASE: u64 = 0x0000_0001_0000_0000;
/// Generic windows (each 4 GiB): `cvta.shared` adds SHARED_WIN to a shared offset, etc.
pub const SHARED_WIN: u64 = 0x0000_7100_0000_0000;
pub const LOCAL_WIN: u64 = 0x0000_7200_0000_0000;
pub const CONST_WIN: u64 = 0x0000_7300_0000_0000;
/// The kernel-parameter window (`cvta.param`): a generic address of a `.param` byte.
pub const PARAM_WIN: u64 = 0x0000_7400_0000_0000;
pub const WIN_SIZE: u64 = 1 << 32;
/// Gap left after every allocation (so small overruns hit no allocation).
const GUARD: u64 = 4096;

/// One live allocation. The bytes are owned through a raw pointer so that blocks running in
/// parallel can write disjoint parts of the same buffer (as on a GPU).
pub struct Alloc {
    pub id: u64,
    pub base: u64,
    pub size: u64,
    pub ptr: *mut u8,
    /// One bit per byte: written since allocation (host write/memset or kernel store).
    pub init: Box<[AtomicU8]>,
    /// Every byte is initialised (e.g. a full upload): the per-byte checks can be skipped.
    pub full: std::sync::atomic::AtomicBool,
    /// Module variables are tagged with their module name.
    pub label: Option<String>,
}

unsafe impl Send for Alloc {}
unsafe impl Sync for Alloc {}

impl Drop for Alloc {
    fn drop(&mut self) {
        if self.size > 0 {
            unsafe {
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.size as usize)));
            }
        }
    }
}

impl Alloc {
    /// Calls `f(shadow byte index, bit mask)` for the shadow bits of [off, off+len).
    #[inline(always)]
    fn shadow_spans(off: u64, len: u64, mut f: impl FnMut(usize, u8) -> bool) -> bool {
        let end = off + len;
        let mut b = off;
        while b < end {
            let first = b % 8;
            let n = (8 - first).min(end - b);
            let bits = (((1u32 << n) - 1) << first) as u8;
            if !f((b / 8) as usize, bits) {
                return false;
            }
            b += n;
        }
        true
    }

    /// Marks bytes [off, off+len) as initialised.
    #[inline]
    pub fn mark_init(&self, off: u64, len: u64) {
        if self.full.load(Ordering::Relaxed) {
            return;
        }
        if off == 0 && len == self.size {
            self.full.store(true, Ordering::Relaxed);
        }
        Self::shadow_spans(off, len, |i, bits| {
            let s = &self.init[i];
            // plain load first: re-writing initialised memory needs no read-modify-write
            if s.load(Ordering::Relaxed) & bits != bits {
                s.fetch_or(bits, Ordering::Relaxed);
            }
            true
        });
    }

    /// The first byte of [off, off+len) never written, if any.
    #[inline]
    pub fn first_uninit(&self, off: u64, len: u64) -> Option<u64> {
        if self.full.load(Ordering::Relaxed) {
            return None;
        }
        let ok = Self::shadow_spans(off, len, |i, bits| self.init[i].load(Ordering::Relaxed) & bits == bits);
        if ok {
            return None;
        }
        (off..off + len).find(|b| self.init[(b / 8) as usize].load(Ordering::Relaxed) >> (b % 8) & 1 == 0)
    }

    pub fn describe(&self) -> String {
        match &self.label {
            Some(l) => format!(
                "allocation #{} `{}` [{:#x}, {:#x}) of {} bytes",
                self.id,
                l,
                self.base,
                self.base + self.size,
                self.size
            ),
            None => format!(
                "allocation #{} [{:#x}, {:#x}) of {} bytes",
                self.id,
                self.base,
                self.base + self.size,
                self.size
            ),
        }
    }
}

#[derive(Default)]
struct State {
    /// Sorted by base.
    allocs: Vec<Alloc>,
    next: u64,
    next_id: u64,
    /// Recently freed ranges (for use-after-free messages).
    freed: Vec<(u64, u64, u64)>,
}

pub struct GlobalMem {
    st: RwLock<State>,
}

impl Default for GlobalMem {
    fn default() -> Self {
        GlobalMem { st: RwLock::new(State { next: GLOBAL_BASE, next_id: 1, ..Default::default() }) }
    }
}

/// Read-only view of the allocation table for the duration of a launch.
pub struct AllocView<'a> {
    pub allocs: &'a [Alloc],
    pub freed: &'a [(u64, u64, u64)],
}

impl<'a> AllocView<'a> {
    /// Index of the allocation containing [addr, addr+len).
    #[inline]
    pub fn find(&self, addr: u64, len: u64) -> Option<usize> {
        let i = self.allocs.partition_point(|a| a.base <= addr);
        if i == 0 {
            return None;
        }
        let a = &self.allocs[i - 1];
        if addr.wrapping_add(len) <= a.base + a.size && addr >= a.base {
            Some(i - 1)
        } else {
            None
        }
    }
    /// Human description of what an out-of-bounds address missed.
    pub fn explain_miss(&self, addr: u64, len: u64) -> String {
        let i = self.allocs.partition_point(|a| a.base <= addr);
        let mut parts = Vec::new();
        if i > 0 {
            let a = &self.allocs[i - 1];
            if addr < a.base + a.size {
                parts.push(format!("straddles the end of {} (access of {len} bytes)", a.describe()));
            } else {
                parts.push(format!("{} bytes past the end of {}", addr - (a.base + a.size), a.describe()));
            }
        }
        if i < self.allocs.len() {
            let a = &self.allocs[i];
            parts.push(format!("{} bytes before {}", a.base - addr, a.describe()));
        }
        for &(id, b, s) in self.freed.iter().rev() {
            if addr >= b && addr < b + s {
                parts.insert(0, format!("inside FREED allocation #{id} [{b:#x}, {:#x})", b + s));
                break;
            }
        }
        if parts.is_empty() {
            "no allocation exists".to_string()
        } else {
            parts.join("; ")
        }
    }
}

impl GlobalMem {
    pub fn alloc(&self, bytes: usize, label: Option<String>) -> Result<u64> {
        let mut st = self.st.write().map_err(|_| Error::Memory("allocator lock poisoned".into()))?;
        let size = bytes as u64;
        let base = st.next.div_ceil(256) * 256;
        if base + size >= SHARED_WIN {
            return Err(Error::Memory(format!("emulated global memory exhausted allocating {bytes} bytes")));
        }
        st.next = base + size.max(1) + GUARD;
        let ptr = if size > 0 {
            // fresh allocations are poisoned (0xCD) so reads of never-written data stand out
            let mut v: Vec<u8> = Vec::new();
            v.try_reserve_exact(bytes).map_err(|_| {
                Error::Memory(format!("host memory exhausted allocating {bytes} bytes of emulated device memory"))
            })?;
            v.resize(bytes, 0xCD);
            Box::into_raw(v.into_boxed_slice()) as *mut u8
        } else {
            std::ptr::null_mut()
        };
        let id = st.next_id;
        st.next_id += 1;
        let init = (0..size.div_ceil(8)).map(|_| AtomicU8::new(0)).collect();
        let pos = st.allocs.partition_point(|a| a.base < base);
        st.allocs
            .insert(pos, Alloc { id, base, size, ptr, init, full: std::sync::atomic::AtomicBool::new(false), label });
        Ok(base)
    }

    pub fn free(&self, addr: u64) {
        if let Ok(mut st) = self.st.write() {
            if let Some(i) = st.allocs.iter().position(|a| a.base == addr) {
                let a = st.allocs.remove(i);
                st.freed.push((a.id, a.base, a.size));
                if st.freed.len() > 4096 {
                    st.freed.remove(0);
                }
            }
        }
    }

    /// Runs `f` with the allocation table locked for reading.
    pub fn with_view<R>(&self, f: impl FnOnce(&AllocView) -> R) -> Result<R> {
        let st = self.st.read().map_err(|_| Error::Memory("allocator lock poisoned".into()))?;
        Ok(f(&AllocView { allocs: &st.allocs, freed: &st.freed }))
    }

    fn host_range(&self, addr: u64, len: usize, what: &str, marks: bool, f: impl FnOnce(*mut u8)) -> Result<()> {
        self.with_view(|v| match v.find(addr, len as u64) {
            Some(i) => {
                let a = &v.allocs[i];
                if len > 0 {
                    f(unsafe { a.ptr.add((addr - a.base) as usize) });
                    if marks {
                        a.mark_init(addr - a.base, len as u64);
                    }
                }
                Ok(())
            }
            None if len == 0 => Ok(()),
            None => {
                Err(Error::Memory(format!("{what} of {len} bytes at {addr:#x}: {}", v.explain_miss(addr, len as u64))))
            }
        })?
    }

    pub fn write(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.host_range(dst, src.len(), "host write", true, |p| unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len())
        })
    }
    pub fn read(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        let n = dst.len();
        let dp = dst.as_mut_ptr();
        self.host_range(src, n, "host read", false, |p| unsafe { std::ptr::copy_nonoverlapping(p, dp, n) })
    }
    pub fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()> {
        self.host_range(dst, bytes, "memset", true, |p| unsafe { std::ptr::write_bytes(p, byte, bytes) })
    }
}
