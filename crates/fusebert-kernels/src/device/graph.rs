//! Replayable launch lists: [`Device::record`] collects launches, [`Device::graph`] turns them
//! into a [`Graph`] that replays them with one call. On CUDA that is a CUDA graph (captured
//! once on the backend's stream, instantiated, replayed with one `cuGraphLaunch`); elsewhere the
//! graph replays its list launch by launch, so the same code runs everywhere.
//!
//! A graph holds raw device addresses and scalar arguments as they were recorded: whoever owns
//! the buffers must drop the graphs that use them before freeing or moving them.
use super::{Device, KernelArg, LaunchConfig};
use fusebert_core::error::Result;

/// One launch as recorded: what `Device::launch_in` was called with.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedLaunch {
    pub module: String,
    pub kernel: String,
    pub cfg: LaunchConfig,
    pub args: Vec<KernelArg>,
}

/// A replayable launch list on one device.
pub struct Graph {
    device: Device,
    launches: Vec<RecordedLaunch>,
    /// The backend's native graph, when it has them.
    native: Option<u64>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Graph({} launches, native: {:?})", self.launches.len(), self.native)
    }
}

impl Graph {
    pub(super) fn new(device: Device, launches: Vec<RecordedLaunch>) -> Result<Graph> {
        let native = if device.backend.native_graphs() { Some(device.backend.graph_create(&launches)?) } else { None };
        Ok(Graph { device, launches, native })
    }

    /// Replays every launch, in order: one host call on CUDA.
    pub fn launch(&self) -> Result<()> {
        match self.native {
            Some(id) => self.device.backend.graph_launch(id),
            None => {
                for l in &self.launches {
                    self.device.launch_in(&l.module, &l.kernel, l.cfg, &l.args)?;
                }
                Ok(())
            }
        }
    }

    /// The recorded launches.
    pub fn launches(&self) -> &[RecordedLaunch] {
        &self.launches
    }

    /// Whether this is a native (CUDA) graph.
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        if let Some(id) = self.native {
            self.device.backend.graph_destroy(id);
        }
    }
}

/// What a [`GraphCache`] has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GraphStats {
    /// Graphs held now.
    pub cached: usize,
    /// Graphs built (a launch list seen for the first time since the last invalidation).
    pub captures: u64,
    /// Graph replays.
    pub replays: u64,
    /// Times the cache was emptied because the buffers its graphs use went away.
    pub invalidations: u64,
}

/// Graphs keyed by their exact launch list (kernels, grids, addresses, scalars), most recently
/// used first, at most `capacity` of them. A launch list fixes everything a graph bakes in, so
/// a hit is always safe to replay; different batch shapes simply get different graphs.
#[derive(Debug)]
pub struct GraphCache {
    entries: Vec<Graph>,
    capacity: usize,
    stats: GraphStats,
}

impl GraphCache {
    pub fn new(capacity: usize) -> Self {
        GraphCache { entries: Vec::new(), capacity: capacity.max(1), stats: GraphStats::default() }
    }

    /// Replays the graph of exactly this launch list, building it first on a miss.
    pub fn replay(&mut self, dev: &Device, launches: Vec<RecordedLaunch>) -> Result<()> {
        match self.entries.iter().position(|g| g.launches() == launches.as_slice()) {
            Some(i) => {
                let g = self.entries.remove(i);
                self.entries.insert(0, g);
            }
            None => {
                let g = dev.graph(launches)?;
                self.stats.captures += 1;
                self.entries.insert(0, g);
                self.entries.truncate(self.capacity);
            }
        }
        self.entries[0].launch()?;
        self.stats.replays += 1;
        Ok(())
    }

    /// Drops every graph: call before freeing or moving any buffer they use.
    pub fn invalidate(&mut self) {
        if !self.entries.is_empty() {
            self.stats.invalidations += 1;
        }
        self.entries.clear();
    }

    pub fn stats(&self) -> GraphStats {
        GraphStats { cached: self.entries.len(), ..self.stats }
    }
}
