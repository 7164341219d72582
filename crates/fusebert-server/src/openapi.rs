//! The OpenAPI document served at `/api-doc/openapi.json`: the checked-in
//! `crates/fusebert-server/openapi.json`, embedded at build time. A test keeps its paths equal
//! to [`crate::http::route_table`].

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");
