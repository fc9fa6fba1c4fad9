//! The two ways to run the split deployment agree: `scripts/cluster` (what runs here) and
//! `docker-compose.yml` (for users with Docker; no engine runs here) name the same services,
//! with the same ports, schemas and variables as the code (`ServiceName`), and the gateway's
//! route tables route the same paths.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ecommerce::gateway::RouteTable;
use ecommerce::split::ServiceName;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A service as `scripts/cluster` starts it.
#[derive(Debug, PartialEq, Eq)]
struct ClusterService {
    public: u16,
    internal: u16,
    schemas: Vec<String>,
}

/// The `services=( "name public internal schemas…" … )` table of `scripts/cluster`, and the
/// variables its `start_one` gives every service.
fn cluster() -> (BTreeMap<String, ClusterService>, BTreeSet<String>) {
    let script = read(&root().join("scripts/cluster"));
    let table = script
        .split_once("services=(\n")
        .and_then(|(_, rest)| rest.split_once("\n)"))
        .map(|(table, _)| table)
        .expect("scripts/cluster has a services=( … ) table");
    let services = table
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.trim().trim_matches('"').split_whitespace().collect();
            assert!(fields.len() >= 4, "malformed entry {line:?}");
            (
                fields[0].to_owned(),
                ClusterService {
                    public: fields[1].parse().unwrap(),
                    internal: fields[2].parse().unwrap(),
                    schemas: fields[3..].iter().map(|s| (*s).to_owned()).collect(),
                },
            )
        })
        .collect();
    let start_one = script
        .split_once("start_one() {")
        .and_then(|(_, rest)| rest.split_once("setsid"))
        .map(|(body, _)| body)
        .expect("scripts/cluster has start_one");
    let variables = start_one
        .lines()
        .filter_map(|line| {
            let (name, _) = line.trim().split_once('=')?;
            (name.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !name.is_empty())
                .then(|| name.to_owned())
        })
        .collect();
    (services, variables)
}

/// Each service of `docker-compose.yml` with its `environment`, read from the file's plain
/// layout (two-space indents, `KEY: "value"` pairs); anything else in a service is skipped.
fn compose() -> (BTreeMap<String, BTreeMap<String, String>>, String) {
    let text = read(&root().join("examples/ecommerce/docker-compose.yml"));
    let body = text
        .split_once("\nservices:\n")
        .map(|(_, body)| body.to_owned())
        .expect("docker-compose.yml has services");
    let mut services: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let (mut current, mut in_environment) = (None::<String>, false);
    for line in body.lines() {
        if line.starts_with("  ") && !line.starts_with("   ") && line.trim_end().ends_with(':') {
            let name = line.trim().trim_end_matches(':').to_owned();
            services.insert(name.clone(), BTreeMap::new());
            current = Some(name);
            in_environment = false;
        } else if line.starts_with("    ") && !line.starts_with("     ") {
            in_environment = line.trim() == "environment:";
        } else if in_environment
            && line.starts_with("      ")
            && let Some((key, value)) = line.trim().split_once(": ")
            && let Some(service) = &current
        {
            services
                .get_mut(service)
                .unwrap()
                .insert(key.to_owned(), value.trim_matches('"').to_owned());
        }
    }
    (services, text)
}

fn port_of(address: &str) -> u16 {
    address.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn the_cluster_script_and_the_compose_file_run_the_same_services() {
    let (cluster, variables) = cluster();
    let (compose, compose_text) = compose();
    // The readers found what they read.
    for variable in [
        "ECOMMERCE_SERVICE",
        "DATABASE_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
    ] {
        assert!(variables.contains(variable), "{variable}: {variables:?}");
    }
    assert!(compose.contains_key("postgres") && compose.contains_key("kafka"));
    let names: Vec<String> = ServiceName::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    assert_eq!(
        cluster.keys().cloned().collect::<BTreeSet<_>>(),
        names.iter().cloned().collect::<BTreeSet<_>>(),
        "scripts/cluster runs every service"
    );
    for service in ServiceName::ALL {
        let name = service.as_str();
        let started = &cluster[name];
        let (public, internal) = service.ports();
        assert_eq!(
            (started.public, started.internal),
            (public, internal),
            "{name}"
        );
        assert_eq!(
            started.schemas,
            service.schemas().to_vec(),
            "{name}: the schemas its role owns"
        );
        let environment = compose
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"));
        for variable in &variables {
            assert!(
                environment.contains_key(variable),
                "{name}: scripts/cluster sets {variable}, docker-compose.yml does not"
            );
        }
        assert_eq!(environment["ECOMMERCE_SERVICE"], name);
        assert_eq!(
            port_of(&environment["ECOMMERCE_PUBLIC_ADDR"]),
            public,
            "{name}"
        );
        assert_eq!(
            port_of(&environment["ECOMMERCE_INTERNAL_ADDR"]),
            internal,
            "{name}"
        );
        assert!(
            environment["DATABASE_URL"].starts_with(&format!("postgres://shop_{name}:")),
            "{name} connects as its own role: {}",
            environment["DATABASE_URL"]
        );
        // Every peer where its ports say.
        for peer in ServiceName::ALL {
            let key = format!("ECOMMERCE_PEER_{}_URL", peer.as_str().to_uppercase());
            assert_eq!(
                environment.get(&key).map(String::as_str),
                Some(format!("http://{}:{}", peer.as_str(), peer.ports().1).as_str()),
                "{name}: {key}"
            );
        }
        // Its role and schemas are made as the script makes them.
        assert!(
            compose_text.contains(&format!("CREATE ROLE shop_{name} LOGIN")),
            "{name}: no role"
        );
        for schema in service.schemas() {
            assert!(
                compose_text.contains(&format!(
                    "CREATE SCHEMA IF NOT EXISTS shop_{schema} AUTHORIZATION shop_{name}"
                )),
                "{name}: schema {schema}"
            );
        }
    }
    let gateway = compose.get("gateway").expect("a gateway service");
    assert_eq!(port_of(&gateway["ECOMMERCE_GATEWAY_ADDR"]), 5000);
}

#[test]
fn both_route_tables_route_the_same_paths_to_the_services_ports() {
    let local = RouteTable::load(&root().join("examples/ecommerce/gateway.json")).unwrap();
    let composed =
        RouteTable::load(&root().join("examples/ecommerce/deploy/gateway.compose.json")).unwrap();
    assert_eq!(local.routes, composed.routes);
    assert_eq!(local.timeout_seconds, composed.timeout_seconds);
    assert_eq!(local.body_limit_bytes, composed.body_limit_bytes);
    for service in ServiceName::ALL {
        let name = service.as_str();
        let port = service.ports().0;
        assert_eq!(
            local.services[name].url,
            format!("http://127.0.0.1:{port}"),
            "{name}"
        );
        assert_eq!(
            composed.services[name].url,
            format!("http://{name}:{port}"),
            "{name}"
        );
    }
    assert_eq!(local.services.len(), ServiceName::ALL.len());
}
