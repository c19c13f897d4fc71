//! Any text given as config.json parses or is refused with an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use neuropods_core::ModelConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ModelConfig::from_json(text);
    }
});
