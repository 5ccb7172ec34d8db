//! The `dropnet` binary, run as a user runs it.

use std::process::Command;

fn dropnet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dropnet")).args(args).output().unwrap()
}

#[test]
fn gradcheck_json_reports_every_case_below_tolerance() {
    let out = dropnet(&["gradcheck", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["max_rel_error"].as_f64().unwrap() <= 1e-6);
    let cases = report["cases"].as_array().unwrap();
    let names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for expected in
        ["relu-inverted-perunit-batch4", "softmax-hidden-standard-perunit-batch4", "relu-inverted-perlayer-batch1"]
    {
        assert!(names.contains(&expected), "missing case {expected}: {names:?}");
    }
    // the layer kinds of the stack each have cases, found by the words of their names
    for word in ["conv", "maxpool", "avgpool", "spatial", "perunit-map"] {
        assert!(names.iter().any(|n| n.contains(word)), "no case named with {word}: {names:?}");
    }
    for case in cases {
        assert!(case["max_rel_error"].as_f64().unwrap() <= 1e-6, "{case}");
    }
}

#[test]
fn gradcheck_table_runs_on_one_thread() {
    let out = dropnet(&["--threads", "1", "gradcheck"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("all passed"), "{text}");
}

#[test]
fn an_unknown_subcommand_fails_with_a_message() {
    let out = dropnet(&["fly"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fly"));
}

#[test]
fn output_into_a_closed_pipe_ends_without_a_panic() {
    use std::process::Stdio;
    // The reader goes away before gradcheck (about 20 ms of work) prints its table.
    let mut child = Command::new(env!("CARGO_BIN_EXE_dropnet"))
        .arg("gradcheck")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "exit status of a panic");
}
