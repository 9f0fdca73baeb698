//! Rebuilds when migrations change, since `sqlx::migrate!` embeds them at compile time, and
//! gzips the vendored docs assets once, so the binary embeds them compressed.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The vendored files the docs page serves, compressed into `OUT_DIR` under the same name + `.gz`.
const DOCS_ASSETS: [&str; 2] = [
    "assets/vendor/swagger-ui-dist-5.35.0/swagger-ui-bundle.js",
    "assets/vendor/swagger-ui-dist-5.35.0/swagger-ui.css",
];

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for asset in DOCS_ASSETS {
        println!("cargo:rerun-if-changed={asset}");
        gzip(Path::new(asset), &out_dir);
    }
}

/// Writes `OUT_DIR/<file name>.gz`; a build step, so a failure stops the build with its cause.
fn gzip(source: &Path, out_dir: &Path) {
    let bytes =
        std::fs::read(source).unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()));
    let name = source.file_name().expect("a file name").to_string_lossy();
    let target = out_dir.join(format!("{name}.gz"));
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&bytes).expect("gzip into memory");
    let compressed = encoder.finish().expect("gzip into memory");
    std::fs::write(&target, compressed)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
}
