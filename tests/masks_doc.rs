//! The test vectors of docs/masks.md (computed there by an independent Python implementation)
//! against the library: the bit rule itself and the masks a network actually draws.

use dropnet::dropout::{gaussian_normal, logit, mask_bit, mask_word, relaxed_bit, threshold, MaskDraw};
use dropnet::layer::Layer;
use dropnet::rng::Stream;
use dropnet::stack::Stack;
use dropnet::{Activation, Architecture, Matrix, Mode, Network, Scaling};

struct Vector {
    draw: MaskDraw,
    row: u32,
    column: u32,
    keep: f64,
    word: u32,
    bit: bool,
}

/// The cells of the data rows of the table between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
/// in docs/masks.md (the header row and the rule below it left out).
fn table(name: &str) -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/masks.md")).unwrap();
    let begin = format!("<!-- {name}:begin -->");
    let table = doc.split(&begin).nth(1).unwrap().split(&format!("<!-- {name}:end -->")).next().unwrap();
    table
        .lines()
        .filter(|l| l.starts_with("| "))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

fn vectors() -> Vec<Vector> {
    table("vectors")
        .into_iter()
        .map(|c| Vector {
            draw: MaskDraw {
                seed: c[0].parse().unwrap(),
                stream: match c[1].as_str() {
                    "mask" => Stream::Mask,
                    "mc-mask" => Stream::McMask,
                    other => panic!("unknown stream {other}"),
                },
                layer: c[2].parse().unwrap(),
                step: c[3].parse().unwrap(),
                first_row: 0,
            },
            row: c[4].parse().unwrap(),
            column: c[5].parse().unwrap(),
            keep: c[6].parse().unwrap(),
            word: u32::from_str_radix(&c[7], 16).unwrap(),
            bit: c[8] == "1",
        })
        .collect()
}

#[test]
fn every_documented_vector_matches() {
    let vectors = vectors();
    assert!(vectors.len() >= 15, "the table was not found or is short");
    for v in &vectors {
        assert_eq!(mask_word(&v.draw, v.row, v.column), v.word, "word of row {}, column {}", v.row, v.column);
        assert_eq!(mask_bit(&v.draw, v.row, v.column, v.keep), v.bit, "bit of row {}, column {}", v.row, v.column);
    }
}

#[test]
fn a_training_network_draws_the_documented_bits() {
    // 784 units on every dropped input, so the seed-42 vectors at column 783 address real units.
    let arch = Architecture::mlp(
        &[784, 784, 784, 10],
        Activation::Relu,
        Activation::Identity,
        &[0.8, 0.8, 0.5],
        Scaling::Inverted,
    )
    .unwrap();
    let mut net = Network::<f32>::new(&arch, 42).unwrap();
    let x = Matrix::from_fn(6, 784, |i, k| ((i + k) % 5) as f32);
    let mut checked = 0;
    for step in 0..2 {
        net.forward(&x, Mode::Train { step }).unwrap();
        for v in vectors().iter().filter(|v| v.draw.seed == 42 && v.draw.stream == Stream::Mask && v.draw.step == step)
        {
            if v.draw.layer < 2 && v.row < 6 && v.keep == 0.8 {
                let mask = net.noises()[v.draw.layer as usize].mask().unwrap();
                assert_eq!(mask.get(v.row as usize, v.column as usize), v.bit);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3, "the table should hold three seed-42 vectors for layers 0 and 1");
}

#[test]
fn every_documented_threshold_matches() {
    let rows = table("thresholds");
    assert!(rows.len() >= 8, "the table was not found or is short");
    for r in rows {
        let keep: f64 = r[0].parse().unwrap();
        assert_eq!(keep * 4_294_967_296.0, r[1].parse::<f64>().unwrap(), "keep·2^32 of {keep}");
        assert_eq!(threshold(keep), r[2].parse::<u64>().unwrap(), "threshold of {keep}");
    }
}

#[test]
fn feature_map_masks_use_the_documented_columns() {
    // per unit on a 2-channel 3x3 map: column (h·3 + w)·2 + c, noise ordinal 0; then per channel
    // on the convolution's 4 channels: column c, noise ordinal 1
    let stack = Stack::parse("2x3x3,keep0.5,conv4k1,relu,spatial0.5,conv1k1", Scaling::Inverted).unwrap();
    let mut net = Network::<f64>::new(&Architecture::new(stack), 7).unwrap();
    let x = Matrix::from_fn(5, 18, |i, k| 1.0 + ((i * 3 + k) % 4) as f64);
    net.forward(&x, Mode::Train { step: 3 }).unwrap();
    let draw = |layer| MaskDraw { seed: 7, stream: Stream::Mask, layer, step: 3, first_row: 0 };
    let noises = net.noises();
    let (mut kept, mut dropped) = (0, 0);
    for row in 0..5 {
        for (h, w, c) in (0..18).map(|k| (k / 6, k / 2 % 3, k % 2)) {
            let column = (h * 3 + w) * 2 + c;
            let bit = mask_bit(&draw(0), row as u32, column as u32, 0.5);
            assert_eq!(noises[0].mask().unwrap().get(row, column), bit, "row {row}, (h, w, c) = ({h}, {w}, {c})");
        }
        let spatial = noises[1].spatial().expect("the second noise is spatial");
        for c in 0..4 {
            let bit = mask_bit(&draw(1), row as u32, c as u32, 0.5);
            assert_eq!(noises[1].mask().unwrap().get(row, c), bit, "row {row}, channel {c}");
            // inverted scaling: a kept channel is multiplied by 1/keep = 2 at every position
            assert_eq!(spatial.factors(row)[c], if bit { 2.0 } else { 0.0 });
            if bit {
                kept += 1
            } else {
                dropped += 1
            }
        }
    }
    // 20 channel bits at keep 0.5: both outcomes occur (all 20 alike has probability 2·2^-20)
    assert!(kept > 0 && dropped > 0);
}

fn stream(name: &str) -> Stream {
    match name {
        "mask" => Stream::Mask,
        "mc-mask" => Stream::McMask,
        other => panic!("unknown stream {other}"),
    }
}

#[test]
fn every_documented_gaussian_vector_matches_and_a_network_draws_it() {
    let rows = table("gaussian");
    assert!(rows.len() >= 8, "the table was not found or is short");
    for r in &rows {
        let draw = MaskDraw {
            seed: r[0].parse().unwrap(),
            stream: stream(&r[1]),
            layer: r[2].parse().unwrap(),
            step: r[3].parse().unwrap(),
            first_row: 0,
        };
        let (row, column, keep): (u32, u32, f64) =
            (r[4].parse().unwrap(), r[5].parse().unwrap(), r[6].parse().unwrap());
        let n = gaussian_normal(&draw, row, column);
        assert_eq!(n, r[7].parse::<f64>().unwrap(), "n of {r:?}");
        let factor = 1.0 + ((1.0 - keep) / keep).sqrt() * n;
        assert_eq!(factor, r[8].parse::<f64>().unwrap(), "ε (f64) of {r:?}");
        assert_eq!((factor as f32).to_bits(), u32::from_str_radix(&r[9], 16).unwrap(), "ε (f32) of {r:?}");
    }
    // the seed-42 row (layer 1, step 7, row 5, column 783, keep 0.8) in a network's second noise,
    // in an f32 network (rounded once) and an f64 one (the double kept)
    let stack = Stack::parse("784,keep0.9,dense784,relu,gaussian0.8,dense3", Scaling::Inverted).unwrap();
    let r = rows.iter().find(|r| r[0] == "42" && r[1] == "mask").unwrap();
    let mut net = Network::<f32>::new(&Architecture::new(stack.clone()), 42).unwrap();
    net.forward(&Matrix::from_fn(6, 784, |_, _| 1.0), Mode::Train { step: 7 }).unwrap();
    let factor = net.noises()[1].gaussian().unwrap().factors().get(5, 783);
    assert_eq!(factor.to_bits(), u32::from_str_radix(&r[9], 16).unwrap());
    let mut net = Network::<f64>::new(&Architecture::new(stack), 42).unwrap();
    net.forward(&Matrix::from_fn(6, 784, |_, _| 1.0), Mode::Train { step: 7 }).unwrap();
    assert_eq!(net.noises()[1].gaussian().unwrap().factors().get(5, 783), r[8].parse::<f64>().unwrap());
}

/// The address and starting keep of a row of a concrete table: seed, layer, step (stream
/// `mask`), row, column, keep.
fn concrete_address(r: &[String]) -> (MaskDraw, u32, u32, f64) {
    let draw = MaskDraw {
        seed: r[0].parse().unwrap(),
        stream: Stream::Mask,
        layer: r[1].parse().unwrap(),
        step: r[2].parse().unwrap(),
        first_row: 0,
    };
    (draw, r[3].parse().unwrap(), r[4].parse().unwrap(), r[5].parse().unwrap())
}

#[test]
fn every_documented_concrete_vector_matches_and_a_network_draws_it() {
    let rows = table("concrete");
    assert!(rows.len() >= 8, "the table was not found or is short");
    for r in &rows {
        let (draw, row, column, keep) = concrete_address(r);
        let theta = logit(keep) as f32;
        assert_eq!(theta as f64, r[6].parse::<f64>().unwrap(), "θ of {r:?}");
        let z = relaxed_bit(theta as f64, r[7].parse().unwrap(), mask_word(&draw, row, column));
        assert_eq!(z, r[8].parse::<f64>().unwrap(), "z̃ of {r:?}");
        assert_eq!((z as f32).to_bits(), u32::from_str_radix(&r[9], 16).unwrap(), "z̃ bits of {r:?}");
    }
    // the seed-42 row (layer 1, step 7, row 5, column 783, keep 0.9, t 0.1) in a network's second
    // noise, then the same network's Monte-Carlo pass: hard bits at the learned keep
    let stack = Stack::parse("784,keep0.9,dense784,concrete0.9,dense3", Scaling::Inverted).unwrap();
    let mut net = Network::<f32>::new(&Architecture::new(stack), 42).unwrap();
    let x = Matrix::from_fn(6, 784, |i, k| 1.0 + (i * 784 + k) as f32 * 1e-4);
    net.forward(&x, Mode::Train { step: 7 }).unwrap();
    let r = rows.iter().find(|r| r[0] == "42" && r[1] == "1").unwrap();
    let z = net.noises()[1].concrete().unwrap().bits().get(5, 783);
    assert_eq!(z.to_bits(), u32::from_str_radix(&r[9], 16).unwrap());
    net.forward(&x, Mode::McSample { sample: 3, first_row: 0 }).unwrap();
    let Layer::Dense(dense) = &net.layers()[1] else { panic!("a dense layer") };
    let keep = 1.0 / (1.0 + (-(logit(0.9) as f32 as f64)).exp());
    let draw = MaskDraw { seed: 42, stream: Stream::McMask, layer: 1, step: 3, first_row: 0 };
    for k in [0u32, 1, 2, 500, 783] {
        let a = net.layers()[0].output().get(4, k as usize);
        let expected = if mask_bit(&draw, 4, k, keep) { a * (1.0 / keep) as f32 } else { 0.0 };
        assert_eq!(dense.a_tilde().get(4, k as usize), expected, "unit {k}");
    }
}

#[test]
fn every_documented_f64_concrete_vector_matches_and_an_f64_network_draws_it() {
    let rows = table("concrete-f64");
    assert!(rows.len() >= 8, "the table was not found or is short");
    for r in &rows {
        let (draw, row, column, keep) = concrete_address(r);
        assert_eq!(logit(keep), r[6].parse::<f64>().unwrap(), "θ of {r:?}");
        let z = relaxed_bit(logit(keep), r[7].parse().unwrap(), mask_word(&draw, row, column));
        assert_eq!(z, r[8].parse::<f64>().unwrap(), "z̃ of {r:?}");
    }
    // the seed-42 row in an f64 network's second noise: θ the double logit, z̃ unrounded
    let stack = Stack::parse("784,keep0.9,dense784,concrete0.9,dense3", Scaling::Inverted).unwrap();
    let mut net = Network::<f64>::new(&Architecture::new(stack), 42).unwrap();
    let x = Matrix::from_fn(6, 784, |i, k| 1.0 + (i * 784 + k) as f64 * 1e-4);
    net.forward(&x, Mode::Train { step: 7 }).unwrap();
    let concrete = net.noises()[1].concrete().unwrap();
    let r = rows.iter().find(|r| r[0] == "42" && r[1] == "1").unwrap();
    assert_eq!(concrete.logit[0], r[6].parse::<f64>().unwrap());
    assert_eq!(concrete.bits().get(5, 783), r[8].parse::<f64>().unwrap());
}
