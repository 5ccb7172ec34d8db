//! No user file is ever destroyed: every output is checked before any work, may not be an input
//! or another output, is written atomically with the old file's permissions, and a failed log or
//! plot write costs neither the run nor the model (the run exits 1 naming it).

mod common;
use common::*;
use std::path::Path;

/// A folder with toy IDX data, a CSV file, a test CSV, a recipe and a keep file.
fn inputs(name: &str) -> std::path::PathBuf {
    let dir = toy_dir(name);
    let rows: String = (0..30).map(|i| format!("{},{},{}\n", i % 2, i % 5, i % 3)).collect();
    std::fs::write(dir.join("train.csv"), &rows).unwrap();
    std::fs::write(dir.join("test.csv"), &rows).unwrap();
    std::fs::write(dir.join("r.toml"), "epochs = 1\n").unwrap();
    std::fs::write(dir.join("keep.json"), "[0.9, 0.7]").unwrap();
    dir
}

/// A refused run: non-zero exit, the message, no data read, and not one byte changed.
fn refused(dir: &Path, args: &[&str], expected: &[&str]) {
    let before = snapshot(dir);
    let out = dropnet(dir, args);
    assert_fails(&out, expected);
    assert!(!stderr(&out).contains(" training, "), "data was read before the outputs were checked");
    assert!(snapshot(dir) == before, "{args:?} changed a file");
}

#[test]
fn an_output_may_not_be_any_input() {
    let dir = inputs("outputs_inputs");
    let csv = ["train", "--data", "train.csv", "--arch", "2-3", "--epochs", "1"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { [&csv[..], extra].concat() };
    refused(&dir, &with(&["--out", "train.csv"]), &["--out train.csv is the same file as --data"]);
    refused(&dir, &with(&["--out", "./train.csv"]), &["same file as --data"]);
    refused(&dir, &with(&["--test-data", "test.csv", "--out", "test.csv"]), &["same file as --test-data"]);
    refused(&dir, &with(&["--log", "train.csv"]), &["--log train.csv is the same file as --data"]);
    refused(&dir, &with(&["--plot", "train.csv"]), &["--plot train.csv is the same file as --data"]);
    refused(&dir, &with(&["--recipe", "r.toml", "--out", "r.toml"]), &["same file as --recipe"]);
    refused(&dir, &with(&["--keep-file", "keep.json", "--out", "keep.json"]), &["same file as --keep-file"]);
    // an IDX folder: the .gz that exists, and the plain name dropnet would also read
    let idx = toy_args(&["--epochs", "1", "--out"]);
    refused(&dir, &[&idx[..], &["toy/train-images-idx3-ubyte.gz"]].concat(), &["same file as --data"]);
    refused(&dir, &[&idx[..], &["toy/t10k-labels-idx1-ubyte"]].concat(), &["same file as --data"]);
    // a hard link to the data is the data
    std::fs::hard_link(dir.join("train.csv"), dir.join("link.csv")).unwrap();
    refused(&dir, &with(&["--out", "link.csv"]), &["same file as --data"]);
}

#[test]
fn two_outputs_may_not_be_the_same_file() {
    let dir = inputs("outputs_twice");
    refused(&dir, &toy_args(&["--out", "m", "--log", "m"]), &["--out m and --log m are the same file"]);
    refused(&dir, &toy_args(&["--log", "x", "--plot", "./x"]), &["--log x and --plot ./x are the same file"]);
}

#[test]
fn an_unwritable_output_is_found_before_training() {
    let dir = inputs("outputs_unwritable");
    std::fs::create_dir(dir.join("folder")).unwrap();
    refused(&dir, &toy_args(&["--out", "no/such/m.safetensors"]), &["the folder no/such does not exist"]);
    refused(&dir, &toy_args(&["--out", "folder"]), &["--out folder: is a folder"]);
    refused(&dir, &toy_args(&["--log", "no/log.jsonl"]), &["--log no/log.jsonl", "does not exist"]);
    // /proc takes no new files, even from root
    refused(&dir, &toy_args(&["--out", "/proc/m.safetensors"]), &["cannot write in /proc"]);
    refused(&dir, &toy_args(&["--plot", "/dev/null"]), &["not a regular file"]);
}

#[test]
fn resume_writes_back_to_its_file_and_nothing_else() {
    let dir = inputs("outputs_resume");
    assert!(dropnet(&dir, &toy_args(&["--epochs", "1", "--out", "run.safetensors"])).status.success());
    std::fs::write(dir.join("model.safetensors"), "an unrelated file").unwrap();
    let out = dropnet(&dir, &["train", "--resume", "run.safetensors", "--epochs", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(dir.join("model.safetensors")).unwrap(), "an unrelated file");
    let saved = dropnet::model_file::load(&dir.join("run.safetensors")).unwrap();
    assert_eq!(saved.training.unwrap().epochs_done, 2);
    // the log and plot may not overwrite the file being resumed (which is also the output)
    let resume = ["train", "--resume", "run.safetensors", "--epochs", "3"];
    refused(
        &dir,
        &[&resume[..], &["--log", "run.safetensors"]].concat(),
        &["--resume run.safetensors and --log run.safetensors are the same file"],
    );
    refused(
        &dir,
        &[&resume[..], &["--out", "other.safetensors", "--plot", "run.safetensors"]].concat(),
        &["--plot run.safetensors is the same file as --resume"],
    );
}

#[cfg(unix)]
#[test]
fn a_replaced_model_keeps_its_permissions_and_stale_temporaries_are_removed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = inputs("outputs_permissions");
    assert!(dropnet(&dir, &toy_args(&["--epochs", "1"])).status.success());
    let model = dir.join("model.safetensors");
    std::fs::set_permissions(&model, std::fs::Permissions::from_mode(0o600)).unwrap();
    // what a save killed before its rename leaves behind (its process is long gone)
    let stale = dir.join(".model.safetensors.tmp-4194000");
    std::fs::write(&stale, "half a model").unwrap();
    assert!(dropnet(&dir, &toy_args(&["--epochs", "1"])).status.success());
    assert_eq!(std::fs::metadata(&model).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!stale.exists(), "the stale temporary file is still there");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Run `dropnet` under a shell with a file-size limit of `kb` KiB (writes past it fail with EFBIG;
/// SIGXFSZ is ignored so that the write returns the error instead of killing the process).
#[cfg(unix)]
fn with_file_size_limit(dir: &Path, kb: u32, args: &[&str]) -> std::process::Output {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script =
        format!("ulimit -f {}; trap '' XFSZ; exec '{}' {}", kb * 2, env!("CARGO_BIN_EXE_dropnet"), quoted.join(" "));
    std::process::Command::new("sh").arg("-c").arg(script).current_dir(dir).env_remove("DROPNET_DATA").output().unwrap()
}

#[cfg(unix)]
#[test]
fn a_failed_plot_or_log_write_warns_saves_the_model_and_exits_1() {
    // The toy model file is about 4 KiB, the plot about 25 KiB: a 16 KiB limit fails the plot.
    let dir = inputs("outputs_failed_plot");
    let out = with_file_size_limit(&dir, 16, &toy_args(&["--epochs", "3", "--plot", "curves.svg", "--json"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("warning: cannot write the plot curves.svg") && err.contains("training goes on"), "{err}");
    assert!(err.contains("the plot curves.svg was not written completely"), "{err}");
    assert_eq!(err.matches("warning:").count(), 1, "one warning per output: {err}");
    let saved = dropnet::model_file::load(&dir.join("model.safetensors")).unwrap();
    assert_eq!(saved.training.unwrap().epochs_done, 3, "training went on to the end");
    assert_eq!(last_json(&out)["unwritten"][0], "curves.svg");
    // a log already at the limit: every append fails
    std::fs::write(dir.join("log.jsonl"), vec![b'#'; 16 * 1024]).unwrap();
    let out = with_file_size_limit(&dir, 16, &toy_args(&["--epochs", "2", "--log", "log.jsonl"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("the log log.jsonl was not written completely"), "{}", stderr(&out));
    assert!(dir.join("model.safetensors").exists());
}
