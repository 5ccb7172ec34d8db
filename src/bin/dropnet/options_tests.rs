//! Tests of the training options (a file of its own, included by `options.rs`).
use super::*;
use clap::Args;

#[test]
fn the_field_list_names_every_flag() {
    let cmd = TrainOptions::augment_args(clap::Command::new("t"));
    let mut flags: Vec<String> = cmd.get_arguments().map(|a| a.get_id().to_string()).collect();
    let mut listed: Vec<String> = {
        let all = TrainOptions::default();
        let _ = all.given();
        macro_rules! names { ($($field:ident),*) => { vec![$(stringify!($field).to_string()),*] }; }
        macro_rules! list { (; $($field:ident),*) => { names!($($field),*) }; }
        with_option_fields!(list!())
    };
    flags.sort();
    listed.sort();
    assert_eq!(flags, listed);
}

#[test]
fn a_command_line_keep_file_replaces_a_recipe_keep() {
    let recipe = TrainOptions { keep: Some(vec![0.8, 0.5]), epochs: Some(3), ..Default::default() };
    let cli = TrainOptions { keep_file: Some("k.json".into()), ..Default::default() };
    let merged = recipe.overlay(cli);
    assert_eq!((merged.keep, merged.keep_file, merged.epochs), (None, Some("k.json".into()), Some(3)));
}

#[test]
fn messages_name_the_option_where_it_was_given() {
    let options = Options {
        values: TrainOptions { keep: Some(vec![0.8]), arch: Some("4-3-2".into()), ..Default::default() },
        recipe: Some("r.toml".into()),
        from_recipe: vec!["keep"],
    };
    let err = options.network().unwrap_err().to_string();
    assert!(err.starts_with("keep (in r.toml) has 1 values") && err.contains("--arch 4-3-2"), "{err}");
}

#[test]
fn huge_architectures_are_refused_before_anything_is_allocated() {
    for arch in ["1-4611686018427387904", "1,dense4611686018427387904", "1x4611686018427387904x2,flatten,dense2"] {
        let options = Options::from_values(TrainOptions { arch: Some(arch.into()), ..Default::default() });
        let err = options.network().unwrap_err().to_string();
        assert!(err.contains("--arch") && err.contains("16777216"), "{arch}: {err}");
    }
}

#[test]
fn the_token_form_refuses_the_mlp_flags_and_takes_a_keep_file_per_noise_token() {
    let tokens = TrainOptions {
        arch: Some("1x4x4,spatial0.5,conv2k3,relu,flatten,keep0.5,dense3".into()),
        ..Default::default()
    };
    let with = |f: fn(&mut TrainOptions)| {
        let mut v = tokens.clone();
        f(&mut v);
        Options::from_values(v).network().map(|_| ()).unwrap_err().to_string()
    };
    assert!(with(|v| v.keep = Some(vec![0.5])).contains("--keep applies to the units-per-layer form"));
    assert!(with(|v| v.activation = Some(Activation::Tanh)).contains("--activation applies"));
    let stack = Options::from_values(tokens).stack().unwrap();
    assert_eq!(stack.text(), "1x4x4,spatial0.5,conv2k3,relu,flatten,keep0.5,dense3");
    assert!(parse_keep_file("[0.5]", Path::new("k"), 2).unwrap_err().to_string().contains("1 entries for 2"));
    assert_eq!(parse_keep_file("[[0.5, 0.6], 0.9]", Path::new("k"), 2).unwrap(), vec![vec![0.5, 0.6], vec![0.9]]);
}
