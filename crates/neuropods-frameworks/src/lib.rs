//! Where each framework is and how its libraries are opened, shared by the
//! core (which opens backend and framework libraries) and the backends
//! (which find their framework's libraries and open custom op libraries):
//! library lookup from the library's own location and documented
//! variables ([`location`], [`framework`]), the guarded `dlopen`
//! ([`library`]), custom op libraries ([`custom_ops`]) and file digests
//! ([`digest`]). It links no framework.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod custom_ops;
pub mod digest;
pub mod framework;
pub mod library;
pub mod location;
