//! The Helm chart, offline: `tests/chart/check_chart.py` lints `helm/licensing` and its example
//! workload chart, renders them from every values file, validates every manifest against
//! Kubernetes 1.29, 1.33 and 1.37, checks the restricted Pod Security fields and the values the
//! chart must refuse (see its docstring). Then the price list the production values render is
//! loaded with the service's own parser: the chart must not ship one the service refuses.
//!
//! The Python tools are installed by `.ci/test` into `.tools/helm` (or named by `HELM_PYTHON`);
//! without them the test fails with instructions.

use std::{path::PathBuf, process::Command};

fn python() -> PathBuf {
    let path = std::env::var_os("HELM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/helm/bin/python")
        });
    assert!(
        path.exists(),
        "the chart-test Python was not found at {}: run ./.ci/test once (it installs the pinned tools into .tools/) or set HELM_PYTHON",
        path.display()
    );
    path
}

#[test]
fn the_chart_lints_renders_validates_and_refuses_bad_values() {
    let scratch = tempfile::tempdir().expect("scratch folder");
    let prices = scratch.path().join("price-list.toml");
    let checked = Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/chart/check_chart.py"))
        .arg("--price-list-out")
        .arg(&prices)
        .output()
        .expect("run tests/chart/check_chart.py");
    let report = String::from_utf8_lossy(&checked.stdout);
    println!("{report}");
    assert!(
        checked.status.success(),
        "the chart checks failed:\n{report}\n{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(report.contains("all chart checks passed"), "{report}");

    let list = licensing::price_list::load(&prices)
        .unwrap_or_else(|e| panic!("the production values' price list is refused: {e}"));
    assert_eq!(list.name(), "contact-center-2027");
}
