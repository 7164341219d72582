//! Performance model: the forward pass's launch plan with analytic FLOP and byte counts
//! ([`plan`]), GPU constants with their sources ([`gpu`]), a roofline prediction per kernel
//! with wave quantisation, occupancy, an L2 estimate and launch overhead ([`roofline`]), and
//! SVG plots written by hand ([`svg`]); the Hopper (`_sm90`, `wgmma`) kernel family and its
//! GEMM tiling ([`sm90`]).
pub mod gpu;
pub mod plan;
pub mod roofline;
pub mod sm90;
pub mod svg;

pub use gpu::GpuSpec;
pub use plan::{forward_plan, forward_plan_for, Heads, LaunchPlan, PlannedLaunch};
pub use roofline::{compare_families, predict, FamilyRow, Prediction};
pub use sm90::{KernelChoice, KernelFamily};
