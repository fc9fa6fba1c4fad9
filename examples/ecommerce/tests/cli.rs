//! The `ecommerce` command line.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn ecommerce() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ecommerce"));
    for variable in [
        "DATABASE_URL",
        "ECOMMERCE_JWT_SECRET",
        "ECOMMERCE_M2M_CLIENTS",
        "ECOMMERCE_PRODUCTION",
    ] {
        command.env_remove(variable);
    }
    command
}

#[test]
fn help_lists_the_serve_command_and_its_settings() {
    let output = ecommerce().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "serve",
        "--public-addr",
        "--internal-addr",
        "DATABASE_URL",
        "--production",
    ] {
        assert!(help.contains(expected), "{expected} missing from:\n{help}");
    }
}

#[test]
fn production_mode_refuses_the_development_secret() {
    let output = ecommerce()
        .args([
            "--production",
            "--public-addr",
            "127.0.0.1:0",
            "--internal-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("production mode refuses"), "{stderr}");
}
