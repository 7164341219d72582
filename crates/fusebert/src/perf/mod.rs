//! Performance model: the forward pass's launch plan with analytic FLOP and byte counts
//! ([`plan`]), GPU constants with their sources ([`gpu`]), a roofline prediction per kernel
//! with wave quantisation, occupancy, an L2 estimate and launch overhead ([`roofline`]), and
//! SVG plots written by hand ([`svg`]).
pub mod gpu;
pub mod plan;
pub mod roofline;
pub mod svg;

pub use gpu::GpuSpec;
pub use plan::{forward_plan, Heads, LaunchPlan, PlannedLaunch};
pub use roofline::{predict, Prediction};
