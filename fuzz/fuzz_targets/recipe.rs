//! Any text as a TOML recipe (and the options it gives turned into a network, as `train` would),
//! and as a JSON keep file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// The CLI's options, as the binary compiles them.
#[path = "../../src/bin/dropnet/options.rs"]
#[allow(dead_code)]
mod options;
use options::{parse_keep_file, Options, TrainOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(values) = TrainOptions::from_toml(text, Path::new("fuzz.toml")) {
        // A keep file named by the recipe is not read here: only the options themselves.
        if values.keep_file.is_none() {
            let options = Options::from_values(values);
            if options.check_new_run().is_ok() {
                let _ = options.optim_config();
                // Networks within the limits but too big for the fuzzer's memory are skipped: their
                // allocation is the request, not a parsing bug.
                let small = options.stack().ok().and_then(|s| dropnet::layer::plan(&s).ok()).is_some_and(|plans| {
                    plans.iter().map(|p| p.params()).sum::<usize>() < 1 << 16
                });
                if small {
                    let _ = options.network();
                }
            }
        }
    }
    let _ = parse_keep_file(text, Path::new("keep.json"), 2);
});
