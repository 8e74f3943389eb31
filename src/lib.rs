//! clickedge: an HTTPS click-tracking redirect edge.
//!
//! A customer points a branded link domain at the edge; the first handshake for that name gets a
//! certificate on demand, every click on a sealed link is answered with a 302 and logged, and the
//! admin API onboards domains and mints links. `main.rs` is a thin shell over [`app`] and [`cli`].

pub mod acme;
pub mod admin;
pub mod app;
pub mod certs;
pub mod cli;
pub mod clicks;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod domains;
pub mod errors;
pub mod html;
pub mod http;
pub mod issuer;
pub mod keys;
pub mod links;
mod lockfile;
#[cfg(test)]
mod logged;
pub mod metrics;
#[doc(hidden)]
pub mod netns;
pub mod onboarding;
pub mod policy;
pub mod rate;
pub mod rewrite;
pub mod seal;
pub mod signals;
pub mod status;
pub mod store;
mod sync;
pub mod tls;

pub use domain::Domain;
