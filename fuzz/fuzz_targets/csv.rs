//! Any bytes as a CSV file, with the label column given by index and by name, and as regression
//! data with target columns given by index and by name.
#![no_main]
use dropnet::data::csv::{parse, Columns};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let origin = Path::new("fuzz.csv");
    for label in ["0", "2", "label"] {
        if let Ok(d) = parse(data, origin, Columns::Label(label)) {
            assert_eq!(d.features.len(), d.rows * d.width);
            assert_eq!(d.labels.len(), d.rows);
        }
    }
    for targets in [vec!["1".to_string()], vec!["y".to_string(), "0".to_string()]] {
        if let Ok(d) = parse(data, origin, Columns::Targets(&targets)) {
            assert_eq!(d.features.len(), d.rows * d.width);
            assert_eq!(d.targets.len(), d.rows * d.target_width);
            assert!(d.targets.iter().all(|v| v.is_finite()));
        }
    }
});
