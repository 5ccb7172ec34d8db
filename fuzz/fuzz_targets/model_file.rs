//! Any bytes as a model file: an error or a model, never a panic, and a model that is read is one
//! dropnet writes back and reads again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(saved) = dropnet::model_file::parse(data, Path::new("fuzz.safetensors")) {
        let extras = dropnet::model_file::Extras {
            loss: saved.loss,
            training: saved.training.as_ref(),
            standardization: saved.standardization.as_ref(),
            slots: &saved.slots,
            regression: saved.regression.as_ref(),
        };
        let bytes = dropnet::model_file::encode(&saved.net, &extras).expect("a model read is a model written");
        dropnet::model_file::parse(&bytes, Path::new("again.safetensors")).expect("and read again");
    }
});
