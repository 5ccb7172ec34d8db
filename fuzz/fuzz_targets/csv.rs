//! Any bytes as a CSV file, with the label column given by index and by name.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    for label in ["0", "2", "label"] {
        if let Ok(d) = dropnet::data::csv::parse(data, Path::new("fuzz.csv"), label) {
            assert_eq!(d.features.len(), d.labels.len() * d.width);
        }
    }
});
