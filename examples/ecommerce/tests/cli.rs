//! The `ecommerce` command line.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn ecommerce() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ecommerce"));
    for variable in [
        "DATABASE_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
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

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_demo_drives_a_running_instance_over_http() {
    let (public, internal) = (free_port(), free_port());
    let _server = Child(
        ecommerce()
            .args([
                "serve",
                "--public-addr",
                &format!("127.0.0.1:{public}"),
                "--internal-addr",
                &format!("127.0.0.1:{internal}"),
                "--fail-payments-ending-in",
                "39",
                "--fail-shipments-ending-in",
                "13",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", public)).is_err() {
        assert!(started.elapsed().as_secs() < 30, "the server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = ecommerce()
        .args([
            "demo",
            "--quiet",
            "--customers",
            "10",
            "--orders",
            "60",
            "--url",
            &format!("http://127.0.0.1:{public}"),
            "--internal-url",
            &format!("http://127.0.0.1:{internal}"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("60 orders"), "{stdout}");
    assert!(stdout.contains("demo passed"), "{stdout}");
    for reason in [
        "OutOfStock",
        "CreditLimitReached",
        "PaymentFailed",
        "ShipmentFailed",
    ] {
        assert!(stdout.contains(reason), "{reason} missing:\n{stdout}");
    }
}
