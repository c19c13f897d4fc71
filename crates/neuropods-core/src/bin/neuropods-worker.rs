//! The worker process of out-of-process execution; started by
//! `Neuropod::load` with `use_ope`, never by hand.

fn main() {
    std::process::exit(neuropods_core::worker::serve())
}
