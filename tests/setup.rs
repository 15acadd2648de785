//! `scripts/setup.sh`, the one set-up of `make demo`, `make test`, `.ci/run`
//! and the Dockerfile: its package lists cover what the build links and what
//! the tests start, and a second run changes nothing.

use std::collections::BTreeSet;

fn script() -> String {
    std::fs::read_to_string("scripts/setup.sh").expect("scripts/setup.sh")
}

/// The Debian packages of one of the script's lists (`NAME=(a b c)`).
fn packages(name: &str) -> BTreeSet<String> {
    let text = script();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}=(")))
        .unwrap_or_else(|| panic!("scripts/setup.sh has no {name}=(...) line"));
    line.split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(list, _)| list.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn the_build_packages_match_librdkafkas_features_and_the_dockerfile() {
    let build = packages("BUILD_PACKAGES");
    let cargo = std::fs::read_to_string("Cargo.toml").unwrap();
    let rdkafka = cargo
        .lines()
        .find(|l| l.starts_with("rdkafka ="))
        .expect("rdkafka dependency");
    // Each librdkafka feature that links a system library, and its Debian package.
    for (feature, package) in [
        ("\"ssl\"", "libssl-dev"),
        ("\"gssapi\"", "libsasl2-dev"),
        ("\"curl\"", "libcurl4-openssl-dev"),
    ] {
        assert!(rdkafka.contains(feature), "rdkafka lost feature {feature}");
        assert!(
            build.contains(package),
            "feature {feature} needs {package} in BUILD_PACKAGES"
        );
    }
    assert!(build.contains("pkg-config") && build.contains("make") && build.contains("gcc"));
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    assert!(
        dockerfile.contains("scripts/setup.sh build"),
        "the image builds with the same set-up"
    );
    // The runtime image carries the libraries the build linked.
    for lib in [
        "libssl3",
        "libsasl2-2",
        "libsasl2-modules-gssapi-mit",
        "libcurl4",
    ] {
        assert!(dockerfile.contains(lib), "runtime image lacks {lib}");
    }
}

#[test]
fn the_test_packages_cover_what_the_tests_start() {
    let demo = packages("DEMO_PACKAGES");
    let test = packages("TEST_PACKAGES");
    // The tests' throw-away PostgreSQL (tests/support/postgres.rs) and the demo's.
    assert!(demo.contains("postgresql"));
    let pg = std::fs::read_to_string("tests/support/postgres.rs").unwrap();
    assert!(
        pg.contains("/usr/lib/postgresql"),
        "where initdb is looked up"
    );
    // The real Prometheus and promtool (tests/support/prometheus.rs, tests/deploy.rs).
    let started = std::fs::read_to_string("tests/support/prometheus.rs").unwrap()
        + &std::fs::read_to_string("tests/deploy.rs").unwrap();
    for binary in ["\"prometheus\"", "\"promtool\""] {
        assert!(started.contains(binary), "tests no longer run {binary}?");
    }
    assert!(test.contains("prometheus"));
    // Every module the Python producers import is the standard library's or
    // in tests/producers/requirements.txt.
    let requirements = std::fs::read_to_string("tests/producers/requirements.txt").unwrap();
    let required: BTreeSet<String> = requirements
        .lines()
        .filter_map(|l| l.split(['=', '<', '>', ' ']).next())
        .filter(|n| !n.is_empty())
        .map(|n| n.replace('-', "_").to_lowercase())
        .collect();
    let stdlib = [
        "argparse", "datetime", "decimal", "json", "sys", "uuid", "os", "time",
    ];
    for entry in std::fs::read_dir("tests/producers").unwrap().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("py") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let module = match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["import", m, ..] | ["from", m, "import", ..] => m.split('.').next().unwrap(),
                _ => continue,
            };
            assert!(
                stdlib.contains(&module) || required.contains(module),
                "{} imports {module}, which requirements.txt does not install",
                path.display()
            );
        }
    }
    assert!(
        script().contains("python3 -m venv .venv"),
        "Python packages go into the project's own virtual environment"
    );
}

#[test]
fn a_second_set_up_does_nothing() {
    let run = || {
        let out = std::process::Command::new("scripts/setup.sh")
            .arg("test")
            .output()
            .expect("run scripts/setup.sh");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "scripts/setup.sh test failed:\n{text}"
        );
        text
    };
    run();
    let second = run();
    assert!(
        second.contains("setup: nothing to do"),
        "the second run did something:\n{second}"
    );
}
