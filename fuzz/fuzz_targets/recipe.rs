//! Any text as a TOML recipe (and the options it gives turned into a network, as `train` would),
//! and as a JSON keep file.
#![no_main]
use dropnet::recipe::{parse_keep_file, Options, TrainOptions};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

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
                let small = options.sizes().is_ok_and(|s| s.windows(2).map(|p| p[0] * p[1]).sum::<usize>() < 1 << 16);
                if small {
                    let _ = options.network();
                }
            }
        }
    }
    let _ = parse_keep_file(text, Path::new("keep.json"), &[5, 4, 3]);
});
